"""Recorded platform payloads (tests/fixtures/<platform>/<name>.json), loaded by the stand-ins.

Each file holds one object in the shape the platform sends, with placeholder values where the stand-in fills
in its own (ids, names, timestamps). Every call returns a fresh copy, so callers may change it freely.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@cache
def _load(platform: str, name: str) -> Any:
    return json.loads((FIXTURES / platform / f"{name}.json").read_text(encoding="utf-8"))


def recorded(platform: str, name: str, /, **values: Any) -> dict[str, Any]:
    """A copy of ``tests/fixtures/<platform>/<name>.json`` (an object) with ``values`` filled in.

    A value may only fill a field of the recorded shape: a misspelt field fails instead of adding one.
    """
    payload = copy.deepcopy(_load(platform, name))
    if not isinstance(payload, dict):
        raise TypeError(f"{platform}/{name}.json does not hold an object")
    unknown = set(values) - set(payload)
    if unknown:
        raise KeyError(f"{platform}/{name}.json has no field(s) {sorted(unknown)}")
    payload.update(values)
    return payload
