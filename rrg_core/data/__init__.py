"""Data: image loading, report cleaning and vocabulary, data sets, samplers, transforms."""
