import sys

from privquant.launch import main

sys.exit(main())
