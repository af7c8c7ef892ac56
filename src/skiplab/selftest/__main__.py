"""``python -m skiplab.selftest``: see :mod:`skiplab.selftest`."""

import sys

from skiplab.selftest import main

sys.exit(main())
