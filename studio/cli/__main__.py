"""`python -m studio.cli ...` (how the GUI's dialogs run a command in a child process)."""

import sys

from studio.cli import main

sys.exit(main())
