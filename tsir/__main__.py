"""``python -m tsir``: the ``tsir`` command line (``make run`` calls ``python -m tsir optimize MODEL``)."""

import sys

from tsir.cli import main

sys.exit(main())
