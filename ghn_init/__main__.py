"""``python -m ghn_init``: the same as the ``ghn-init`` command."""

import sys

from .cli import main

sys.exit(main())
