"""nemobot: edit and generate videos by chatting, backed by NemoVideo (or the local localnemo server)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nemobot")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
