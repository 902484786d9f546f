"""``python -m kvstore``: the kvstore command line (see :mod:`kvstore.cli`)."""

import sys

from .cli import main

sys.exit(main())
