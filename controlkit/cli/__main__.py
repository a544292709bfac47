"""``python -m controlkit.cli``."""

import sys

from controlkit.cli import main

sys.exit(main())
