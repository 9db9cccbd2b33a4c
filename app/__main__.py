"""`python -m app` runs the `aifarm` command line."""

import sys

from app.cli import main

sys.exit(main())
