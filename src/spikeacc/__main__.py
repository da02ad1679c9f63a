"""``python -m spikeacc`` = the ``spikeacc`` command."""
import sys

from .cli import main

sys.exit(main())
