"""``python -m labsim``: the same as the ``labsim`` command."""

import sys

from labsim.cli import main

sys.exit(main())
