"""``python -m nemobot``: the same as the ``nemobot`` console script."""

from __future__ import annotations

import sys

from nemobot.cli import main

sys.exit(main())
