"""The ``ghn_init`` logger: every warning and progress note ghn-init emits goes through it.

ghn-init never configures logging itself (no handlers, no levels), as libraries should not; Python's
last-resort handler prints warnings to stderr when the application has not configured logging.

Example:
    >>> import logging
    >>> logging.getLogger("ghn_init").setLevel(logging.ERROR)  # silence ghn-init's warnings
"""

from __future__ import annotations

import logging

__all__ = ["logger"]

logger = logging.getLogger("ghn_init")
