"""``python -m privquant.cli``."""

import sys

from privquant.cli import main

sys.exit(main())
