"""``python -m ghn_init.cli`` (and ``torchrun ... -m ghn_init.cli train ...``): the ``ghn-init`` command."""

import sys

from . import main

sys.exit(main())
