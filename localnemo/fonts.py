"""Which font file titles and captions are drawn with.

FFmpeg's ``drawtext`` needs a font file (or fontconfig to find one), and libass (captions) a family name it
can match in a fonts directory. Neither FFmpeg build ships a font, so one is looked for: a configured file,
then the usual system locations (Debian's ffmpeg package pulls in DejaVu through fontconfig), then fonts
shipped inside installed Python packages (matplotlib carries DejaVu). Text with Chinese, Japanese or Korean
characters prefers a CJK font when one is installed; otherwise it is drawn with the Latin font (with gaps
where glyphs are missing), and a warning is logged.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)

_LATIN_NAMES = (
    "DejaVuSans-Bold.ttf", "DejaVuSans.ttf", "LiberationSans-Bold.ttf", "LiberationSans-Regular.ttf",
    "NotoSans-Bold.ttf", "NotoSans-Regular.ttf", "FreeSansBold.ttf", "FreeSans.ttf", "Arial Bold.ttf",
    "arialbd.ttf", "Arial.ttf", "arial.ttf", "Helvetica.ttc",
)  # fmt: skip
_CJK_NAMES = (
    "NotoSansCJK-Bold.ttc", "NotoSansCJK-Regular.ttc", "NotoSansCJKsc-Bold.otf", "NotoSansCJKsc-Regular.otf",
    "NotoSansSC-Bold.otf", "NotoSansSC-Regular.otf", "wqy-zenhei.ttc", "wqy-microhei.ttc", "DroidSansFallbackFull.ttf",
    "DroidSansFallback.ttf", "PingFang.ttc", "msyh.ttc", "simhei.ttf",
)  # fmt: skip
_FONT_DIRS = (
    "/usr/share/fonts", "/usr/local/share/fonts", "/usr/share/fonts/truetype", "/Library/Fonts",
    "/System/Library/Fonts", "C:/Windows/Fonts",
)  # fmt: skip
# Everything a Latin font lacks and a CJK font has: Han, kana, Hangul, CJK punctuation, full-width forms.
# This is a question of glyphs, not of language (that is bot/lang.py): Korean needs a CJK font too.
_NEEDS_CJK_FONT = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")


@dataclass(frozen=True)
class Font:
    path: Path
    family: str


def needs_cjk_font(text: str) -> bool:
    return _NEEDS_CJK_FONT.search(text) is not None


def _search_dirs() -> list[Path]:
    dirs = [Path(d) for d in _FONT_DIRS]
    dirs.append(Path.home() / ".fonts")
    dirs.append(Path.home() / ".local" / "share" / "fonts")
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            dirs.append(Path(location) / "mpl-data" / "fonts" / "ttf")
    return [d for d in dirs if d.is_dir()]


def _find(names: tuple[str, ...]) -> Path | None:
    dirs = _search_dirs()
    for name in names:
        for directory in dirs:
            direct = directory / name
            if direct.is_file():
                return direct
            for found in directory.rglob(name):
                if found.is_file():
                    return found
    return None


@cache
def find_font(configured: str | None = None, *, cjk: bool = False) -> Font | None:
    """The font to draw with (blocking: it may walk font folders once; the answer is cached)."""
    if configured:
        path = Path(configured).expanduser()
        if path.is_file():
            return Font(path.resolve(), family_name(path) or path.stem)
        log.warning("localnemo.font.configured_missing path=%s", configured)
    found = _find(_CJK_NAMES) if cjk else None
    if found is None:
        found = _find(_LATIN_NAMES)
        if cjk:
            log.warning("localnemo.font.no_cjk fallback=%s", found.name if found else None)
    if found is None:
        log.warning("localnemo.font.none")
        return None
    return Font(found.resolve(), family_name(found) or found.stem)


@cache
def cjk_font_available(configured: str | None = None) -> bool:
    """Whether Chinese, Japanese or Korean text can be drawn: a CJK font is installed, or one is configured
    (LOCALNEMO_FONT_FILE, taken as the operator's choice). Blocking, cached, like :func:`find_font`."""
    if configured and Path(configured).expanduser().is_file():
        return True
    return _find(_CJK_NAMES) is not None


# The Debian/Ubuntu packages of a CJK font, named in the reply when none is installed.
CJK_FONT_PACKAGES = ("fonts-noto-cjk", "fonts-wqy-microhei")


def family_name(path: Path) -> str | None:
    """The family name in a TrueType/OpenType file's ``name`` table (the first font of a collection)."""
    try:
        with path.open("rb") as reader:
            data = reader.read(4 * 1024 * 1024)
    except OSError:
        return None
    try:
        offset = 0
        if data[:4] == b"ttcf":
            (offset,) = struct.unpack_from(">I", data, 12)
        (tables,) = struct.unpack_from(">H", data, offset + 4)
        for index in range(tables):
            tag, _, table_offset, _ = struct.unpack_from(">4sIII", data, offset + 12 + 16 * index)
            if tag != b"name":
                continue
            _, count, strings = struct.unpack_from(">HHH", data, table_offset)
            best: str | None = None
            for record in range(count):
                platform, encoding, language, name_id, length, start = struct.unpack_from(
                    ">HHHHHH", data, table_offset + 6 + 12 * record
                )
                if name_id != 1:
                    continue
                raw = data[table_offset + strings + start : table_offset + strings + start + length]
                if platform == 3 and encoding in (0, 1, 10):
                    name = raw.decode("utf-16-be", errors="replace")
                    if language == 0x0409:  # English (US) names are what fontconfig and libass match first
                        return name
                    best = best or name
                elif platform == 1 and encoding == 0:
                    best = best or raw.decode("mac_roman", errors="replace")
            return best
    except struct.error:
        return None
    return None
