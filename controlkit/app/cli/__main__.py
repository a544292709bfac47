"""``python -m controlkit.app.cli``."""

import sys

from controlkit.app.cli import main

sys.exit(main())
