"""Where the benchmarks find this checkout and the reference fixtures.

The fixtures folder is ``$GHN_INIT_FIXTURES``, by default ``../shared/fixtures`` next to the repository (as
for the tests). The benchmarks are run as scripts, so their folder is on ``sys.path``: ``from paths import ...``.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("GHN_INIT_FIXTURES", REPO.parent / "shared" / "fixtures"))
