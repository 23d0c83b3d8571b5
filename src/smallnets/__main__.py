import sys

from smallnets.cli import main

sys.exit(main())
