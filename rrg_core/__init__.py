"""rrg-review core: data, models, metrics and the review pipeline (no UI code here)."""

__version__ = "0.1.0"
