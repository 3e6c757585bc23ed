"""``python -m components.cli ...``: the ``apd`` command."""

import sys

from components.cli import main

sys.exit(main())
