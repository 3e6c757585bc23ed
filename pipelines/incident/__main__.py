"""``python -m pipelines.incident`` (``make incident``): the drift drill."""

import sys

from pipelines.incident.drill import main

sys.exit(main())
