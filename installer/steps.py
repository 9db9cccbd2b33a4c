"""One step of the installers (pip, autostart, shortcut), run with the system Python before AI Farm is installed."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from app.installer import main

sys.exit(main())
