"""``python -m cnnlab`` is the ``cnnlab`` command (see :mod:`cnnlab.cli`)."""

import sys

from cnnlab.cli import main

sys.exit(main())
