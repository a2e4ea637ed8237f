"""Long text in pieces a platform accepts: the one splitter for every adapter and the status message.

Platforms refuse messages over their length limit (Telegram 4096, Discord 2000 characters): text is cut at
the last line break or space before the limit, and hard at the limit when a piece has neither.
"""

from __future__ import annotations


def split_text(text: str, limit: int, *, max_parts: int | None = None) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters. With ``max_parts``, the last piece allowed is
    cut short and ends with "…" when more would follow (a status message has room for one piece)."""
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        if max_parts is not None and len(parts) >= max_parts - 1:
            parts.append(rest[: limit - 1] + "…")
            return parts
        # "\n\n" is always before or at the last "\n": a line break or a space is the best boundary.
        cut = max(rest.rfind("\n", 0, limit), rest.rfind(" ", 0, limit))
        if cut <= 0:
            cut = limit
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    parts.append(rest)
    return parts
