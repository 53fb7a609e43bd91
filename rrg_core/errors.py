"""The project's own exceptions.

Every error that user input can cause derives from :class:`RRGError`, itself a
``ValueError``, so callers (the app, the CLI) can catch one type and show its
message, which is written for the person who supplied the input.
"""


class RRGError(ValueError):
    """Base class: bad input that the user can fix; the message says how."""


class ImageLoadError(RRGError):
    """An image file could not be turned into a radiograph (unreadable, hostile, unsupported)."""


class DatasetError(RRGError):
    """A data set folder or file is malformed or incomplete."""


class ImagesMissingError(DatasetError):
    """A data set has reports but not the image files a caller asked for."""
