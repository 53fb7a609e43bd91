"""Neural network parts: image and text encoders, decoders and heads."""
