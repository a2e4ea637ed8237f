"""Which language to answer in: the one place that decides ``en`` or ``zh``.

The bot speaks English and Chinese. A platform's locale wins when it gives one; otherwise the script of
the user's text decides. localnemo's agent answers through ``language_of`` (the text's script first, then
the session's language), so every part of the product agrees on what counts as Chinese. (Which *font* a
title needs is another question, answered in ``localnemo/fonts.py``: Korean and Japanese need a CJK font
too, but they are not Chinese.)
"""

from __future__ import annotations

import re
from typing import Literal

Language = Literal["en", "zh"]

# Han ideographs (extension A, the unified block, compatibility ideographs): what a Chinese message is
# written in. Punctuation alone ("ok！") does not make a message Chinese, and Hangul and kana are not Chinese.
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def has_cjk(text: str) -> bool:
    """True when ``text`` holds Chinese characters."""
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


def language_of(text: str, fallback: object = None) -> Language:
    """The language of a message's own words, else of ``fallback`` (a session's or user's locale), else en."""
    return "zh" if has_cjk(text) else (from_locale(fallback) or "en")
