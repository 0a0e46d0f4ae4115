"""``python -m pysched_lightning.dashboard``: the ``pysched dashboard`` command."""
import sys

from .command import main

sys.exit(main())
