"""The offline agent on the ways people ask, table-driven: each phrasing with the draft change it must make.

Every row runs the agent on a 60-second clip (its pauses already measured, so no FFmpeg) and compares a
short description of how the draft changed (see ``changes``) with the row's. A phrasing the agent does not
understand must leave the draft as it was, say so with two or three suggestions, and cost no credit.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.intents import Intent, route
from bot.nemo.timeline_model import Draft, Track
from localnemo import history, understand
from localnemo.agent import AgentText, AgentToolCall, PlannerAgent
from localnemo.state import SessionRecord
from tests.test_localnemo_engine import Nemo, running_nemo

SRC = "http://x/files/1/a.mp4"
CLIP_MS = 60_000
SILENCES = [[10.0, 12.0], [30.0, 33.0]]
PAUSES = "cut 0–10.2, 11.8–30.2, 32.8–60"
PAUSES_TIGHT = "cut 0–10.1, 11.9–30.1, 32.9–60"
PAUSES_GENTLE = "cut 0–10.333, 11.667–30.333, 32.667–60"  # snapped to frames


def clip_session(tmp_path: Path) -> SessionRecord:
    session = SessionRecord("1", "t", "p", "en", "u", tmp_path)
    # As an upload of a.mp4 puts it on the timeline (start over rebuilds it so).
    meta = {"title": "a", "src": SRC, "start": 0, "kind": "video", "in": 0, "out": CLIP_MS, "fps": 30}
    session.draft.t.append(Track.model_validate({"tt": 0, "sg": [{"d": CLIP_MS, "m": meta}]}))
    info = {"cdn_url": SRC, "file_type": "video", "filename": "a.mp4", "duration": 60.0, "fps": 30}
    session.video_infos.append(info)
    session.video_analyses[SRC] = {
        "threshold_db": -35.0, "has_audio": True, "duration": 60.0, "silences": SILENCES, "speech_db": -20.0,
    }  # fmt: skip
    return session


def _s(ms: float) -> str:
    return f"{ms / 1000:g}"


def changes(before: Draft, after: Draft) -> list[str]:
    """How the draft changed, in a small language: "cut 0–30", "speed 0.5", "volume 0%", "music 35%",
    "music 30% no-duck", "music removed", "music volume 20%", "title 'Urban Dreams'", "title 'X' 5 s",
    "text 'Subscribe' at 5", "text 'Thanks' at end", "text 'Hi' whole", "aspect 9:16 blur", "fit crop",
    "fade in 1", "fade out 2", "resolution 720p"."""
    out: list[str] = []
    old, new = before.to_wire(), after.to_wire()

    def video(draft: dict[str, Any]) -> list[dict[str, Any]]:
        return [s["m"] for t in draft["t"] if t["tt"] == 0 for s in t["sg"]]

    def music(draft: dict[str, Any]) -> list[dict[str, Any]]:
        return [s["m"] for t in draft["t"] if t["tt"] == 1 for s in t["sg"] if s["m"].get("role") == "music"]

    def texts(draft: dict[str, Any]) -> list[tuple[str, Any, Any, Any]]:
        return [(s["m"].get("role"), s["m"].get("text"), s["m"].get("start"), s["d"])
                for t in draft["t"] if t["tt"] == 7 for s in t["sg"]]  # fmt: skip

    spans_old = [(m["in"], m["out"]) for m in video(old)]
    spans_new = [(m["in"], m["out"]) for m in video(new)]
    if spans_old != spans_new:
        out.append("cut " + ", ".join(f"{_s(a)}–{_s(b)}" for a, b in spans_new))
    speeds = {m.get("speed", 1) for m in video(new)}
    if speeds != {m.get("speed", 1) for m in video(old)}:
        out.append(f"speed {min(speeds):g}")
    volumes = {m.get("volume", 1) for m in video(new)}
    if volumes != {m.get("volume", 1) for m in video(old)}:
        out.append(f"volume {round(min(volumes) * 100)}%")
    music_old, music_new = music(old), music(new)
    if music_new and not music_old:
        m = music_new[0]
        out.append(f"music {round(m['volume'] * 100)}%" + ("" if m.get("duck") else " no-duck"))
    elif music_old and not music_new:
        out.append("music removed")
    elif music_new and music_old[0]["volume"] != music_new[0]["volume"]:
        out.append(f"music volume {round(music_new[0]['volume'] * 100)}%")
    length = sum(s["d"] for t in new["t"] if t["tt"] == 0 for s in t["sg"])
    for role, text, start, duration in texts(new):
        if (role, text, start, duration) in texts(old):
            continue
        if role == "title":
            out.append(f"title '{text}'" + ("" if duration == 3000 else f" {_s(duration)} s"))
        elif role == "text":
            where = "whole" if duration == length and start == 0 else "end" if start + duration == length else _s(start)
            out.append(f"text '{text}' at {where}")
    m_old, m_new = old["m"], new["m"]
    if m_new.get("aspect_ratio") != m_old.get("aspect_ratio"):
        out.append(f"aspect {m_new['aspect_ratio']} {m_new.get('fit')}")
    elif m_new.get("fit") != m_old.get("fit"):
        out.append(f"fit {m_new['fit']}")
    for key, word in (("fade_in_ms", "in"), ("fade_out_ms", "out")):
        if m_new.get(key) != m_old.get(key):
            out.append(f"fade {word} {_s(m_new[key])}")
    if m_new.get("resolution") != m_old.get("resolution"):
        out.append(f"resolution {m_new['resolution']}")
    return out


async def run(agent: PlannerAgent, session: SessionRecord, text: str) -> tuple[list[AgentToolCall], str]:
    calls: list[AgentToolCall] = []
    words: list[str] = []
    async for event in agent.run(session, text):
        if isinstance(event, AgentToolCall):
            calls.append(event)
        elif isinstance(event, AgentText):
            words.append(event.text)
    return calls, " ".join(words)


# (what was said before, if anything; the phrasing; the changes it must make)
UNDERSTOOD: list[tuple[str | None, str, list[str]]] = [
    # cutting pauses
    (None, "cut the pauses", [PAUSES]),
    (None, "remove the silences", [PAUSES]),
    (None, "remove silent parts", [PAUSES]),
    (None, "get rid of the dead air", [PAUSES]),
    (None, "cut out the awkward pauses", [PAUSES]),
    (None, "trim the silence", [PAUSES]),
    (None, "delete all the pauses", [PAUSES_TIGHT]),
    (None, "cut pauses, tight", [PAUSES_TIGHT]),
    (None, "remove pauses aggressively", [PAUSES_TIGHT]),
    (None, "only cut the long pauses", [PAUSES_GENTLE]),
    (None, "cut the pauses gently", [PAUSES_GENTLE]),
    (None, "jump cut it", [PAUSES]),
    (None, "cut teh pauzes", [PAUSES]),
    (None, "remove the silnces", [PAUSES]),
    (None, "去掉停顿", [PAUSES]),
    (None, "剪掉静音部分", [PAUSES]),
    (None, "删除所有停顿", [PAUSES_TIGHT]),
    (None, "去掉沉默的地方", [PAUSES]),
    # trimming
    (None, "keep the first 30 seconds", ["cut 0–30"]),
    (None, "first thirty seconds only", ["cut 0–30"]),
    (None, "just the first 30s", ["cut 0–30"]),
    (None, "trim it to 30 seconds", ["cut 0–30"]),
    (None, "make it 30 seconds long", ["cut 0–30"]),
    (None, "shorten it to half a minute", ["cut 0–30"]),
    (None, "cut it down to 20 seconds", ["cut 0–20"]),
    (None, "cut the first 5 seconds", ["cut 5–60"]),
    (None, "remove the first five seconds", ["cut 5–60"]),
    (None, "delete the first 10 s", ["cut 10–60"]),
    (None, "skip the first ten seconds", ["cut 10–60"]),
    (None, "drop the last 5 seconds", ["cut 0–55"]),
    (None, "cut off the last ten seconds", ["cut 0–50"]),
    (None, "keep the last 15 seconds", ["cut 45–60"]),
    (None, "only the last twenty seconds", ["cut 40–60"]),
    (None, "from 0:10 to 0:45", ["cut 10–45"]),
    (None, "keep from 10 to 20 seconds", ["cut 10–20"]),
    (None, "keep 0:05-0:15", ["cut 5–15"]),
    (None, "remove from 1:02 to 1:05", []),
    (None, "remove 0:20 to 0:25", ["cut 0–20, 25–60"]),
    (None, "cut out 20s to 25s", ["cut 0–20, 25–60"]),
    (None, "delete between 20 and 25 seconds", ["cut 0–20, 25–60"]),
    (None, "keep the first minute", []),
    (None, "keep the first 1 minute", []),
    (None, "前30秒", ["cut 0–30"]),
    (None, "保留前三十秒", ["cut 0–30"]),
    (None, "去掉前5秒", ["cut 5–60"]),
    (None, "删掉最后十秒", ["cut 0–50"]),
    (None, "从0:10到0:45", ["cut 10–45"]),
    (None, "剪成20秒", ["cut 0–20"]),
    # speed
    (None, "1.5x", ["speed 1.5"]),
    (None, "make it 2x faster", ["speed 2"]),
    (None, "speed it up", ["speed 1.5"]),
    (None, "play it at double speed", ["speed 2"]),
    (None, "twice as fast", ["speed 2"]),
    (None, "half speed", ["speed 0.5"]),
    (None, "slow motion", ["speed 0.5"]),
    (None, "slow-mo please", ["speed 0.5"]),
    (None, "slow it down", ["speed 0.75"]),
    (None, "play at 0.5x speed", ["speed 0.5"]),
    (None, "speed 1.25x", ["speed 1.25"]),
    (None, "one and a half times faster", ["speed 1.5"]),
    (None, "two times faster", ["speed 2"]),
    (None, "quarter speed", ["speed 0.25"]),
    (None, "make it faster", ["speed 1.5"]),
    (None, "spead it up", ["speed 1.5"]),
    (None, "1.5倍速", ["speed 1.5"]),
    (None, "两倍速播放", ["speed 2"]),
    (None, "慢动作", ["speed 0.5"]),
    (None, "加速", ["speed 1.5"]),
    (None, "放慢一点", ["speed 0.75"]),
    # sound
    (None, "mute", ["volume 0%"]),
    (None, "mute the video", ["volume 0%"]),
    (None, "remove the original sound", ["volume 0%"]),
    (None, "turn off the audio", ["volume 0%"]),
    (None, "no sound", ["volume 0%"]),
    (None, "voice volume 80%", ["volume 80%"]),
    (None, "set the volume to 50 percent", ["volume 50%"]),
    (None, "volume fifty percent", ["volume 50%"]),
    (None, "half volume", ["volume 50%"]),
    (None, "make the voice louder", ["volume 150%"]),
    (None, "turn the sound down", ["volume 60%"]),
    (None, "mtue", []),
    (None, "静音", ["volume 0%"]),
    (None, "去掉原声", ["volume 0%"]),
    (None, "音量80%", ["volume 80%"]),
    ("mute", "unmute", ["volume 100%"]),
    ("mute", "取消静音", ["volume 100%"]),
    # music
    (None, "add background music", ["music 30%"]),
    (None, "add music", ["music 30%"]),
    (None, "add some music", ["music 30%"]),
    (None, "put some background music on it", ["music 30%"]),
    (None, "add a soundtrack", ["music 30%"]),
    (None, "add bgm", ["music 30%"]),
    (None, "background music at 35%", ["music 35%"]),
    (None, "add background music at thirty five percent", ["music 35%"]),
    (None, "add background music at 20%, no ducking", ["music 20% no-duck"]),
    (None, "add music without ducking", ["music 30% no-duck"]),
    (None, "add backgroud musci", ["music 30%"]),
    (None, "add musci", ["music 30%"]),
    (None, "i want some music in the background", ["music 30%"]),
    (None, "加背景音乐", ["music 30%"]),
    (None, "配上音乐", ["music 30%"]),
    (None, "加点背景音乐，音量30%", ["music 30%"]),
    ("add music", "remove the music", ["music removed"]),
    ("add music", "no music", ["music removed"]),
    ("add music", "get rid of the music", ["music removed"]),
    ("add music", "make the music quieter", ["music volume 18%"]),
    ("add music", "music louder", ["music volume 45%"]),
    ("add music", "music volume 20%", ["music volume 20%"]),
    ("add music", "去掉背景音乐", ["music removed"]),
    # titles and text
    (None, 'title "Urban Dreams"', ["title 'Urban Dreams'"]),
    (None, "add a title Urban Dreams", ["title 'Urban Dreams'"]),
    (None, "add the title Urban Dreams", ["title 'Urban Dreams'"]),
    (None, "title: Urban Dreams", ["title 'Urban Dreams'"]),
    (None, "title: Urban Dreams at the start", ["title 'Urban Dreams'"]),
    (None, "Title Urban Dreams", ["title 'Urban Dreams'"]),
    (None, "add a title that says Urban Dreams", ["title 'Urban Dreams'"]),
    (None, "put a title saying Urban Dreams at the beginning", ["title 'Urban Dreams'"]),
    (None, "make the title Urban Dreams", ["title 'Urban Dreams'"]),
    (None, "set the title to Urban Dreams", ["title 'Urban Dreams'"]),
    (None, "title it Urban Dreams", ["title 'Urban Dreams'"]),
    (None, "add a titel Urban Dreams", ["title 'Urban Dreams'"]),
    (None, "add title Urban Dreams for 5 seconds", ["title 'Urban Dreams' 5 s"]),
    (None, "opening title: Summer 2024", ["title 'Summer 2024'"]),
    (None, "add a title card reading Night Walk", ["title 'Night Walk'"]),
    (None, "标题 城市之夜", ["title '城市之夜'"]),
    (None, "标题：城市之夜", ["title '城市之夜'"]),
    (None, "加标题城市之夜", ["title '城市之夜'"]),
    (None, "添加标题“城市之夜”", ["title '城市之夜'"]),
    (None, "put Subscribe at the end", ["text 'Subscribe' at end"]),
    (None, 'add text "Subscribe" at 0:05', ["text 'Subscribe' at 5"]),
    (None, "add text Subscribe at 0:05", ["text 'Subscribe' at 5"]),
    (None, "add the text Thanks for watching at the end", ["text 'Thanks for watching' at end"]),
    (None, "write Follow me at the end", ["text 'Follow me' at end"]),
    (None, "show Subscribe at 10 seconds", ["text 'Subscribe' at 10"]),
    (None, 'add "Like and subscribe" at the end', ["text 'Like and subscribe' at end"]),
    (None, "text: Hello world", ["text 'Hello world' at whole"]),
    (None, "add text Hello from 5s to 8s", ["text 'Hello' at 5"]),
    (None, "在结尾加上文字 订阅", ["text '订阅' at end"]),
    (None, "结尾加文字：谢谢观看", ["text '谢谢观看' at end"]),
    (None, "加文字“你好”", ["text '你好' at whole"]),
    # canvas
    (None, "make it 9:16", ["aspect 9:16 blur"]),
    (None, "9:16", ["aspect 9:16 blur"]),
    (None, "make it vertical", ["aspect 9:16 blur"]),
    (None, "vertical for tiktok", ["aspect 9:16 blur"]),
    (None, "make it verticle", ["aspect 9:16 blur"]),
    (None, "portrait mode", ["aspect 9:16 blur"]),
    (None, "turn it into a reel", ["aspect 9:16 blur"]),
    (None, "square", ["aspect 1:1 blur"]),
    (None, "make it square with black bars", ["aspect 1:1 pad"]),
    (None, "1:1 cropped", ["aspect 1:1 crop"]),
    (None, "4:5 for instagram", ["aspect 4:5 blur"]),
    (None, "16:9", ["aspect 16:9 blur"]),
    (None, "vertical, crop to fill", ["aspect 9:16 crop"]),
    (None, "竖屏", ["aspect 9:16 blur"]),
    (None, "改成竖版，裁剪", ["aspect 9:16 crop"]),
    (None, "正方形", ["aspect 1:1 blur"]),
    (None, "横屏加黑边", ["aspect 16:9 pad"]),
    # fades
    (None, "fade in and out", ["fade in 1", "fade out 1"]),
    (None, "fade in", ["fade in 1"]),
    (None, "fade out at the end", ["fade out 1"]),
    (None, "fade out over 2 seconds", ["fade out 2"]),
    (None, "fade in and out over three seconds", ["fade in 3", "fade out 3"]),
    (None, "add a fade in", ["fade in 1"]),
    (None, "淡入淡出", ["fade in 1", "fade out 1"]),
    (None, "结尾淡出", ["fade out 1"]),
    # resolution, as the agent takes it (the bot routes a bare "export 720p" to an export itself)
    (None, "set the resolution to 720p", ["resolution 720p"]),
    (None, "make it 4K", ["resolution 4k"]),
    # several at once
    (None, "cut the pauses and add background music", [PAUSES, "music 30%"]),
    (None, "cut the pauses, then add music at 35%", [PAUSES, "music 35%"]),
    (None, "make it 9:16 and add a title Urban Dreams", ["aspect 9:16 blur", "title 'Urban Dreams'"]),
    (None, "keep the first 30 seconds then fade out", ["cut 0–30", "fade out 1"]),
    (None, "mute it and add music", ["volume 0%", "music 30%"]),
    (None, "half speed, fade in", ["speed 0.5", "fade in 1"]),
    (None, "vertical, add backgroud musci and fade in and out",
     ["aspect 9:16 blur", "music 30%", "fade in 1", "fade out 1"]),
    (None, "去掉停顿，加背景音乐", [PAUSES, "music 30%"]),
    (None, "改成竖屏，然后加标题 城市之夜", ["aspect 9:16 blur", "title '城市之夜'"]),
    (None, "静音，加背景音乐，淡入淡出", ["volume 0%", "music 30%", "fade in 1", "fade out 1"]),
    (None, "cut the pauses plus add music", [PAUSES, "music 30%"]),
    (None, "trim to 20 seconds after that fade out", ["cut 0–20", "fade out 1"]),
    # more of the ways people ask
    (None, "tighten it up", [PAUSES_TIGHT]),
    ("add music", "turn off the music", ["music removed"]),
    (None, "add text at the end saying Thanks", ["text 'Thanks' at end"]),
    (None, "add a title at the start saying Hello There", ["title 'Hello There'"]),
    (None, "change the title to Hello World", ["title 'Hello World'"]),
    (None, "add a title One Direction", ["title 'One Direction'"]),
    (None, "add a title Vertical Life", ["title 'Vertical Life'"]),
    (None, "put a title saying 30 Days of Code", ["title '30 Days of Code'"]),
    (None, "add the word Sale at 0:03", ["text 'Sale' at 3"]),
    (None, "put the text Follow me at the end", ["text 'Follow me' at end"]),
    (None, "can you add some upbeat music", ["music 30%"]),
    (None, "put music in the background at 40 percent", ["music 40%"]),
    (None, "I only want the first 20 seconds", ["cut 0–20"]),
    (None, "first 45 secs", ["cut 0–45"]),
    (None, "get rid of the first 3 seconds", ["cut 3–60"]),
    (None, "crop it to square", ["aspect 1:1 crop"]),
    (None, "make this a tiktok", ["aspect 9:16 blur"]),
    (None, "instagram story format", ["aspect 9:16 blur"]),
    (None, "make the audio louder", ["volume 150%"]),
    (None, "slow it down to half speed", ["speed 0.5"]),
    (None, "加快播放速度", ["speed 1.5"]),
    (None, "视频太长了，剪到30秒", ["cut 0–30"]),
    (None, "在开头加标题：我的旅行", ["title '我的旅行'"]),
    ("add music", "把音乐调小一点", ["music volume 18%"]),
    (None, "变成正方形", ["aspect 1:1 blur"]),
    # the reviewer's rows: values already in effect, numbers read the way they are meant
    ("make it 2x", "speed 1x", ["speed 1"]),
    ("make it 2x", "set the volume to 100%", []),
    ("mute", "volume 100%", ["volume 100%"]),
    (None, "速度加快一倍", ["speed 2"]),
    (None, "加快一倍", ["speed 2"]),
    ("add music", "the music is too loud", ["music volume 18%"]),
    ("add music", "音乐小一点", ["music volume 18%"]),
    ("add music", "音乐太大了", ["music volume 18%"]),
    ("add music", "music lower please", ["music volume 18%"]),
    ("add music", "lower the music to ten percent", ["music volume 10%"]),
    ("add music", "music at fifty percent", ["music volume 50%"]),
    ("add music", "the music should be louder", ["music volume 45%"]),
    (None, "play some music", ["music 30%"]),
    (None, "add music and lower the voice", ["music 30%", "volume 60%"]),
    (None, "add a title Fast and Furious", ["title 'Fast and Furious'"]),
    (None, "add a title Rock and Roll and make it 9:16", ["title 'Rock and Roll'", "aspect 9:16 blur"]),
    (None, "add the title Best Day Ever and make it vertical", ["title 'Best Day Ever'", "aspect 9:16 blur"]),
    (None, "make it thirty five seconds, add a title Road Trip and fade out",
     ["cut 0–35", "title 'Road Trip'", "fade out 1"]),
    (None, "speed it up two times", ["speed 2"]),
    (None, "speed it up 3 times", ["speed 3"]),
    (None, "play at 125%", ["speed 1.25"]),
    (None, "play it at 80% speed", ["speed 0.8"]),
    (None, "make it 3 times faster", ["speed 3"]),
    (None, "keep the first 30 seconds", ["cut 0–30"]),
    ("keep the first 30 seconds", "keep the first minute", []),  # 30 s long: already within it
    (None, "keep the first half minute", ["cut 0–30"]),
    (None, "trim the beginning by 3 seconds", ["cut 3–60"]),
    (None, "cut 3 seconds off the end", ["cut 0–57"]),
    (None, "keep only seconds ten to twenty", ["cut 10–20"]),
    (None, "remove seconds five through eight", ["cut 0–5, 8–60"]),
    ("make it 2x", "normal speed", ["speed 1"]),
    ("make it 2x", "set the speed to normal", ["speed 1"]),
    ("make it 2x", "set it back to normal speed", ["speed 1"]),
    (None, "把视频变快两倍", ["speed 2"]),
    (None, "cut the pauses then export 720p", [PAUSES, "resolution 720p"]),
    (None, "cut the pauses then export", [PAUSES]),
    (None, "剪掉停顿，然后导出", [PAUSES]),
]  # fmt: skip

# Music that is not there cannot be made quieter: said honestly, nothing added, no credit (below).
NO_MUSIC_YET = ["the music is too loud", "音乐小一点", "music lower please", "the music should be louder"]

# Already so on the untouched clip: "Nothing changed", no tool call, no undo step (and no credit, below).
ALREADY_SO: list[tuple[str | None, str]] = [
    (None, "speed 1x"), (None, "1x speed"), (None, "volume 100%"), (None, "set the volume to 100%"),
    (None, "unmute"), ("mute", "unmute ||| unmute"), (None, "normal speed"), (None, "set the speed to normal"),
]  # fmt: skip

NOT_UNDERSTOOD = [
    "make me a sandwich", "what's the weather", "make it look better", "hello", "hi there", "thanks",
    "what a nice day", "make it pop", "make it more cinematic", "improve it", "fix it", "do your magic",
    "make it viral", "tell me a joke", "who are you", "is it good?", "I like it", "asdfgh", "lol", "ok",
    "make it nicer", "can you make it professional", "enhance the colours", "add a filter",
    "remove the background", "make me famous", "what time is it", "translate this", "order a pizza",
    "你好", "谢谢", "今天天气怎么样", "让它更好看", "给我讲个笑话", "做个三明治",
    "make the title bigger", "reverse the video", "rotate it", "add a transition", "add stickers",
    "make it black and white", "add a logo", "increase brightness", "add a title", "加个滤镜",
    "i don't like the music", "change the music",
]  # fmt: skip


def test_there_are_enough_phrasings() -> None:
    assert len(UNDERSTOOD) >= 150
    assert len(NOT_UNDERSTOOD) >= 30


@pytest.mark.parametrize(("before", "text", "expected"), UNDERSTOOD, ids=[row[1] for row in UNDERSTOOD])
async def test_phrasing_makes_its_change(tmp_path: Path, before: str | None, text: str, expected: list[str]) -> None:
    session = clip_session(tmp_path)
    agent = PlannerAgent()
    if before is not None:
        await run(agent, session, before)
    draft = session.draft.model_copy(deep=True)
    calls, reply = await run(agent, session, text)
    assert sorted(changes(draft, session.draft)) == sorted(expected), reply
    if expected:
        assert calls
        assert "nothing changed" not in reply.lower()
    else:
        # Outside the clip (or not what the grammar takes): nothing changed, and the reply says so.
        assert not calls


@pytest.mark.parametrize(("before", "text"), ALREADY_SO, ids=[row[1] for row in ALREADY_SO])
async def test_already_so_changes_nothing_and_says_so(tmp_path: Path, before: str | None, text: str) -> None:
    session = clip_session(tmp_path)
    agent = PlannerAgent()
    for said in ([before] if before else []) + text.split(" ||| ")[:-1]:
        await run(agent, session, said)
    steps = len(session.history)
    draft = session.draft.to_wire()
    calls, reply = await run(agent, session, text.split(" ||| ")[-1])
    assert session.draft.to_wire() == draft
    assert not calls
    assert "Nothing changed: it was already like that." in reply
    assert len(session.history) == steps


@pytest.mark.parametrize(
    ("text", "how"),
    [("cut the pauses then export 720p", 'say "export 720p"'), ("cut the pauses, then export", 'say "export"'),
     ("add a title Road Trip then make it vertical then export", 'say "export"'), ("剪掉停顿，然后导出", "说「导出」")],
)  # fmt: skip
async def test_an_edit_then_export_edits_and_says_how_to_export(tmp_path: Path, text: str, how: str) -> None:
    """The agent cannot export: it makes the edit (keeps the size asked for) and says how to export."""
    session = clip_session(tmp_path)
    draft = session.draft.model_copy(deep=True)
    calls, reply = await run(PlannerAgent(), session, text)
    assert len(calls) == len(changes(draft, session.draft)) >= 1
    assert how in reply
    assert "haven't exported" in reply or "还没有导出" in reply


@pytest.mark.parametrize(
    ("text", "resolution"), [("save it", None), ("save the video", None), ("导出 高清", "1080p"), ("导出超高清", "4k")]
)
def test_save_and_chinese_quality_names_route_to_export(text: str, resolution: str | None) -> None:
    assert (route(text).intent, route(text).resolution) == (Intent.EXPORT, resolution)


@pytest.mark.parametrize("text", NO_MUSIC_YET)
async def test_no_music_to_change_adds_none(tmp_path: Path, text: str) -> None:
    session = clip_session(tmp_path)
    draft = session.draft.to_wire()
    calls, reply = await run(PlannerAgent(), session, text)
    assert session.draft.to_wire() == draft
    assert not calls
    zh = any("\u4e00" <= char <= "\u9fff" for char in text)
    assert ("时间线上还没有音乐" if zh else "There is no music on the timeline yet") in reply
    assert ("没有扣积分" if zh else "no credit used") in reply


@pytest.mark.parametrize("text", NOT_UNDERSTOOD)
async def test_not_understood_changes_nothing_and_suggests(tmp_path: Path, text: str) -> None:
    session = clip_session(tmp_path)
    draft = session.draft.to_wire()
    calls, reply = await run(PlannerAgent(), session, text)
    assert session.draft.to_wire() == draft
    assert not calls
    zh = any("\u4e00" <= char <= "\u9fff" for char in text)
    assert ("我没有理解" if zh else "I didn't understand") in reply
    assert ("没有扣积分" if zh else "no credit used") in reply
    assert 2 <= reply.count("• ") <= 3


def test_the_phrasings_are_read_quickly() -> None:
    from localnemo import planner

    started = time.perf_counter()
    for _ in range(3):
        for _, text, _ in UNDERSTOOD:
            planner.plan(text)
        for text in NOT_UNDERSTOOD:
            planner.plan(text)
    assert time.perf_counter() - started < 2.0


def test_suggestions_are_the_nearest_capabilities() -> None:
    assert understand.suggestions("add a soundtrak")[0] == "music"
    assert understand.suggestions("subtitels please")[0] == "captions"
    assert understand.suggestions("make me a sandwich") == list(understand.DEFAULT_SUGGESTIONS)
    assert understand.suggestions("做个竖屏的")[0] == "canvas"


@pytest.mark.parametrize(
    ("text", "fixed"),
    [("exprot", "export"), ("backgroud musci", "background music"), ("add a titel", "add a title"),
     ("thirty seconds", "30 seconds"), ("a minute and a half", "90 seconds"), ("前三十秒", "前30秒"),
     ("一分半", "90秒"), ("百分之五十", "50%"), ("expert advice", "expert advice"), ("spend", "spend"),
     ('title "Musci Thirty"', 'title "Musci Thirty"')],
)  # fmt: skip
def test_numbers_and_typos_are_normalised(text: str, fixed: str) -> None:
    assert understand.normalise(text) == fixed


# -- the rows of issue 11's table --------------------------------------------------------------------------


async def test_issue_row_add_a_title_urban_dreams_adds_that_title(tmp_path: Path) -> None:
    session = clip_session(tmp_path)
    draft = session.draft.model_copy(deep=True)
    _, reply = await run(PlannerAgent(), session, "add a title Urban Dreams")
    assert changes(draft, session.draft) == ["title 'Urban Dreams'"]
    assert "Urban Dreams" in reply


def test_issue_row_exprot_exports() -> None:
    assert route("exprot").intent is Intent.EXPORT
    assert route("Exprot it").intent is Intent.EXPORT
    assert route("dowload the video").intent is Intent.EXPORT


def test_issue_row_export_1080p_mp4_exports_at_1080p() -> None:
    routed = route("export 1080p MP4")
    assert (routed.intent, routed.resolution) == (Intent.EXPORT, "1080p")
    assert (route("send me the video in 720p").intent, route("send me the video in 720p").resolution) == (
        Intent.EXPORT, "720p",
    )  # fmt: skip
    assert route("download it").intent is Intent.EXPORT
    assert route("export it at 1080p after adding a title and some upbeat music please").intent is Intent.EDIT


@pytest.fixture
async def nemo(tmp_path: Path) -> AsyncIterator[Nemo]:
    async with running_nemo(tmp_path / "nemo", "phrasing-tests") as running:
        session = running.server.state.sessions[running.session_id]
        fresh = clip_session(session.folder)
        session.draft, session.video_infos, session.video_analyses = fresh.draft, fresh.video_infos, {
            SRC: fresh.video_analyses[SRC]
        }
        yield running


def credits(nemo: Nemo) -> int:
    session = nemo.server.state.sessions[nemo.session_id]
    return nemo.server.state.users[session.user_id].credits


async def test_issue_row_export_as_mp4_help_undo_make_it_look_better(nemo: Nemo) -> None:
    """Each does what it says, or says honestly that nothing changed, with suggestions and no credit spent."""
    assert route("export as mp4").intent is Intent.EXPORT
    start = credits(nemo)
    draft = nemo.draft
    helped = await nemo.say("help")
    assert "what I can do offline" in helped
    assert helped.count("• ") == len(understand.CAPABILITIES)
    assert "nothing to undo" in await nemo.say("undo")
    better = await nemo.say("make it look better")
    assert "I didn't understand" in better
    assert "no credit used" in better
    assert nemo.draft == draft
    assert credits(nemo) == start
    assert "Urban Dreams" in await nemo.say("add a title Urban Dreams")
    assert credits(nemo) == start - 1  # a change costs a credit
    assert "Undone: removed the title" in await nemo.say("undo")
    assert nemo.draft == draft


async def test_nothing_not_understood_costs_a_credit(nemo: Nemo) -> None:
    start = credits(nemo)
    draft = nemo.draft
    for text in NOT_UNDERSTOOD:
        reply = await nemo.say(text)
        assert "understand" in reply or "理解" in reply
    assert nemo.draft == draft
    assert credits(nemo) == start
    await nemo.say("fade in")
    assert "Nothing changed" in await nemo.say("fade in")  # already so: said, and free
    assert credits(nemo) == start - 1
    for _, text in ALREADY_SO:
        assert "Nothing changed" in await nemo.say(text.split(" ||| ")[-1])  # speed 1, volume 1: free
    for text in NO_MUSIC_YET:
        reply = await nemo.say(text)
        assert "没有扣积分" in reply or "no credit used" in reply
    assert credits(nemo) == start - 1


# -- undo, redo, start over ------------------------------------------------------------------------------


async def test_undo_redo_and_start_over(tmp_path: Path) -> None:
    session = clip_session(tmp_path)
    agent = PlannerAgent()
    original = session.draft.to_wire()
    await run(agent, session, "add music")
    with_music = session.draft.to_wire()
    await run(agent, session, "make it 9:16")
    with_both = session.draft.to_wire()
    _, reply = await run(agent, session, "undo")
    assert session.draft.to_wire() == with_music
    assert reply.startswith("↩️ Undone:")
    _, reply = await run(agent, session, "撤销")
    assert session.draft.to_wire() == original
    assert reply.startswith("↩️ 已撤销")
    assert "nothing to undo" in (await run(agent, session, "undo"))[1]
    await run(agent, session, "redo")
    await run(agent, session, "重做")
    assert session.draft.to_wire() == with_both
    assert "nothing to redo" in (await run(agent, session, "redo"))[1]
    _, reply = await run(agent, session, "start over")
    assert session.draft.to_wire() == original
    assert "Started over" in reply
    await run(agent, session, "undo")
    assert session.draft.to_wire() == with_both
    await run(agent, session, "重新开始")
    assert session.draft.to_wire() == original
    await run(agent, session, "fade in")
    assert "nothing to redo" in (await run(agent, session, "redo"))[1]  # a new change forgets what was undone


async def test_history_is_bounded(tmp_path: Path) -> None:
    session = clip_session(tmp_path)
    agent = PlannerAgent()
    for index in range(history.LIMIT + 10):
        await run(agent, session, f'title "T{index}"')
    assert len(session.history) == history.LIMIT
    for _ in range(history.LIMIT):
        await run(agent, session, "undo")
    assert "nothing to undo" in (await run(agent, session, "undo"))[1]
    (title,) = [s for t in session.draft.t if t.tt == 7 for s in t.sg]
    assert title.m.text == "T9"


async def test_an_upload_between_turns_is_a_step_of_its_own(tmp_path: Path) -> None:
    session = clip_session(tmp_path)
    agent = PlannerAgent()
    await run(agent, session, "add music")
    with_music = session.draft.to_wire()
    session.draft.t[0].sg.append(session.draft.t[0].sg[0].model_copy(deep=True))  # as an upload would
    await run(agent, session, "fade in")
    await run(agent, session, "undo")
    await run(agent, session, "undo")
    assert session.draft.to_wire() == with_music


async def test_history_survives_a_restart(tmp_path: Path) -> None:
    async with running_nemo(tmp_path / "nemo", "history-tests") as nemo:
        original = nemo.draft
        await nemo.say('title "Kept"')
        titled = nemo.draft
        sid = nemo.session_id
        token = nemo.token
    async with running_nemo(tmp_path / "nemo", "history-tests") as again:
        again.session_id, again.token = sid, token
        assert again.draft == titled
        assert "Undone" in await again.say("undo")
        assert again.draft == original
        assert "Redone" in await again.say("redo")
        assert again.draft == titled
