"""Which language to answer in: the one place that decides ``en`` or ``zh``.

The bot speaks English and Chinese. A platform's locale wins when it gives one; otherwise the script of
the user's text decides. ``has_cjk`` is also what localnemo uses to pick a CJK font and to answer in
Chinese, so that every part of the product agrees on what counts as Chinese text.
"""

from __future__ import annotations

import re
from typing import Literal

Language = Literal["en", "zh"]

# CJK ideographs (extension A, the unified block, compatibility ideographs), CJK punctuation and symbols,
# and full-width forms: what a Chinese message is written in. Hangul is not Chinese.
_CJK = re.compile(r"[\u2e80-\u2fdf\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")


def has_cjk(text: str) -> bool:
    """True when ``text`` holds Chinese characters (or CJK punctuation)."""
    return _CJK.search(text) is not None


def from_locale(locale: object) -> Language | None:
    """``zh`` for any Chinese locale (``zh``, ``zh-CN``, ``zh_TW``, a discord.py ``Locale``), ``en`` for any
    other, None when there is none."""
    text = str(locale or "").strip().lower()
    if not text or text == "none":
        return None
    return "zh" if text.startswith("zh") else "en"


def detect_language(locale: object, text: str = "") -> Language:
    """The platform's locale when it gives one, else the script of the text."""
    return from_locale(locale) or ("zh" if has_cjk(text) else "en")
