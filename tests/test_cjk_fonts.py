"""Chinese text on screen (issue 11, point 6): drawn with a CJK font when one is installed (.ci/run and the
Dockerfile install one); where none is, the reply names the package to install instead of drawing boxes."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from adapters.console import ConsoleReplies
from bot.ffmpeg import ffmpeg_exe
from localnemo import fonts
from tests.conftest import Bot
from tests.test_console_e2e import said, say

TITLE = "城市之夜"


def title_frame(font: Path) -> bytes:
    """The raw grey pixels of a frame with TITLE drawn in ``font``."""
    escaped = str(font).replace("\\", "/").replace(":", r"\:")
    return subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "color=c=black:s=160x60:d=1", "-vf",
         f"drawtext=fontfile='{escaped}':text='{TITLE}':fontcolor=white:fontsize=32:x=8:y=12",
         "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        check=True, capture_output=True,
    ).stdout


def test_a_chinese_title_is_drawn_with_a_cjk_font_not_boxes() -> None:
    if not fonts.cjk_font_available():
        pytest.skip("no CJK font installed (.ci/run installs fonts-wqy-microhei)")
    cjk = fonts.find_font(cjk=True)
    latin = fonts.find_font()
    assert cjk is not None
    assert latin is not None
    assert cjk.path.name in fonts._CJK_NAMES
    drawn, boxes = title_frame(cjk.path), title_frame(latin.path)
    # Real glyphs differ from the Latin font's "missing glyph" boxes, and each of the four is drawn.
    assert drawn != boxes
    assert sum(1 for pixel in drawn if pixel > 128) > 100


async def test_without_a_cjk_font_the_reply_names_the_package(
    bot: Bot, sample_video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fonts, "cjk_font_available", lambda configured=None: False)
    assert bot.engine is not None
    replies = ConsoleReplies(io.StringIO(), tmp_path / "videos", edit_interval_seconds=0)
    await say(bot.engine, replies, f"/upload {sample_video}")
    await say(bot.engine, replies, 'title "Urban Dreams"')
    assert "fonts-noto-cjk" not in said(replies)  # a Latin title needs nothing
    await say(bot.engine, replies, f"标题：{TITLE}")
    assert "fonts-noto-cjk" in said(replies)
    assert "中文字体" in said(replies)


async def test_with_a_cjk_font_nothing_is_asked(
    bot: Bot, sample_video: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fonts, "cjk_font_available", lambda configured=None: True)
    assert bot.engine is not None
    replies = ConsoleReplies(io.StringIO(), tmp_path / "videos", edit_interval_seconds=0)
    await say(bot.engine, replies, f"/upload {sample_video}")
    await say(bot.engine, replies, f"标题：{TITLE}")
    assert TITLE in said(replies)
    assert "fonts-noto-cjk" not in said(replies)
