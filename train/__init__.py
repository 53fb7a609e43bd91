"""Training and data-preparation commands: ``python -m train <command>``."""
