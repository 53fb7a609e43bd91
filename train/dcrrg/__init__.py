"""``python -m train dcrrg``: the four DCRRG training steps (see :mod:`train.dcrrg.cli`)."""
