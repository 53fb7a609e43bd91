"""UAR training: dVAE, two stages, presets (python -m train uar / dvae)."""
