"""UAR training: LSU tokenizer (dVAE or feature k-means), two stages, presets (python -m train uar / dvae)."""
