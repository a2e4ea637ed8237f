"""``python -m nemobot``: the same as the ``nemobot`` console script."""

from __future__ import annotations

from nemobot.cli import entry

entry()
