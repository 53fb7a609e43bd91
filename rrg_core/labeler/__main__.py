"""``python -m rrg_core.labeler``: see :mod:`rrg_core.labeler.cli`."""

import sys

from rrg_core.labeler.cli import main

sys.exit(main())
