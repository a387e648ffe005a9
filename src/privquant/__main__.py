import sys

from privquant.cli import main

sys.exit(main())
