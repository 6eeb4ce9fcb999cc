import sys

from gostgev.cli import main

sys.exit(main())
