"""The event-stream decoder, the job parser, the error mapper and the draft in words, on the documented
wire examples (tests/fixtures/nemo, copied from the shared fixtures)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.nemo import errors
from bot.nemo.draft import describe_changes, summarize
from bot.nemo.events import (
    ErrorEvent,
    EventDecoder,
    HeartbeatEvent,
    SSELineParser,
    StreamEvent,
    TextEvent,
    ToolCallEvent,
    ToolResultEvent,
)
from bot.nemo.models import RenderJob, SessionState
from bot.nemo.timeline_model import Draft, Segment, SegmentMeta, Track

FIXTURES = Path(__file__).parent / "fixtures" / "nemo"


def decode_file(name: str, *, chunk: int = 7) -> list[StreamEvent]:
    """Feed the file in small chunks, as a network would, splitting lines and even CRLFs anywhere."""
    text = (FIXTURES / name).read_text()
    parser, decoder = SSELineParser(), EventDecoder()
    out: list[StreamEvent] = []
    items: list[str | None] = []
    for i in range(0, len(text), chunk):
        items.extend(parser.feed(text[i : i + chunk]))
    items.extend(parser.close())
    for item in items:
        out.extend([HeartbeatEvent()] if item is None else decoder.decode(item))
    out.extend(decoder.finish())
    return out


def test_adk_edit_with_text() -> None:
    events = decode_file("adk_edit_with_text.sse")
    assert [type(e) for e in events] == [ToolCallEvent, ToolResultEvent, TextEvent]
    call = events[0]
    assert isinstance(call, ToolCallEvent)
    assert call.name == "edit_multitrack"
    assert call.args["operation"] == "remove_silence"
    assert isinstance(events[2], TextEvent)
    assert events[2].text.startswith("Done! I removed 18.4 s of pauses.")


def test_adk_silent_edit_has_no_text() -> None:
    events = decode_file("adk_silent_edit.sse")
    assert [type(e) for e in events] == [ToolCallEvent, ToolResultEvent]


def test_partial_text_surfaces_once_as_the_whole() -> None:
    events = decode_file("adk_partial_text.sse", chunk=3)
    texts = [e.text for e in events if isinstance(e, TextEvent)]
    assert texts == ["I'll add some lo-fi background music at 35% volume."]


def test_partial_text_without_its_whole_is_still_shown_at_the_end() -> None:
    decoder = EventDecoder()
    for word in ("Half ", "a reply"):
        chunk = {"content": {"role": "model", "parts": [{"text": word}]}, "partial": True}
        assert decoder.decode(json.dumps(chunk)) == []
    assert decoder.finish() == [TextEvent("Half a reply")]


def test_adk_errors_in_both_forms() -> None:
    events = decode_file("adk_error.sse")
    assert events == [
        TextEvent("Let me look at your clip."),
        ErrorEvent("upstream model timeout"),
        ErrorEvent("tool edit_multitrack failed"),
    ]


def test_simple_dialect() -> None:
    events = decode_file("simple_dialect.sse")
    assert [type(e) for e in events] == [TextEvent, ToolCallEvent, HeartbeatEvent, ToolResultEvent, TextEvent]
    assert isinstance(events[1], ToolCallEvent)
    assert events[1].name == "generate_video_with_seedance"
    assert isinstance(events[3], ToolResultEvent)
    assert events[3].result["url"].endswith("abc.mp4")


def test_every_heartbeat_form() -> None:
    events = decode_file("heartbeats.sse", chunk=1)
    assert events == [HeartbeatEvent()] * 4


def test_unknown_and_broken_events_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    decoder = EventDecoder()
    assert decoder.decode('{"type": "telemetry", "x": 1}') == []
    assert decoder.decode('{"something": "else"}') == []
    assert decoder.decode("not json at all") == []
    assert decoder.decode("[1, 2]") == []
    assert any("skip" in r.message for r in caplog.records)


def test_crlf_line_endings_and_multiline_data() -> None:
    parser = SSELineParser()
    items = parser.feed('data: {"type":\r\ndata: "text", "content": "hi"}\r\n\r')
    items += parser.feed("\n: ping\r\n")
    items += parser.close()
    assert items == ['{"type":\n"text", "content": "hi"}', None]
    assert EventDecoder().decode(items[0] or "") == [TextEvent("hi")]


def test_render_job_shapes() -> None:
    top = RenderJob.parse(json.loads((FIXTURES / "render_top_level.json").read_text()), "x")
    assert top.done
    assert top.id == "render_1763900400123"
    assert top.url
    assert top.url.endswith(".mp4")
    assert top.size == 15728640
    wrapped = RenderJob.parse(json.loads((FIXTURES / "render_wrapped.json").read_text()), "x")
    assert wrapped.done
    assert wrapped.url == top.url
    failed = RenderJob.parse(json.loads((FIXTURES / "render_wrapped_failed.json").read_text()), "x")
    assert failed.failed
    assert not failed.done
    assert failed.error == "invalid draft: track 2 has no segments"


def test_completed_without_url_is_not_done() -> None:
    job = RenderJob.parse({"taskId": "render_1", "status": "completed", "progress": 100}, "render_1")
    assert not job.done
    assert not job.failed


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, {"code": 1001, "message": "token expired"}, errors.TokenInvalid),
        (200, {"code": 1002, "message": "session not found"}, errors.SessionNotFound),
        (403, {"code": 2001, "message": "insufficient credits"}, errors.OutOfCredits),
        (400, {"code": 4001, "message": "unsupported file type"}, errors.UnsupportedFileType),
        (413, {"code": 4002, "message": "file too large"}, errors.FileTooLarge),
        (400, {"code": 400, "message": "missing X-Client-Id"}, errors.MissingClientId),
        (402, {"code": 402, "message": "export not available on the free plan"}, errors.ExportBlocked),
        (429, "<html><body><h1>429 Too Many Requests</h1></body></html>", errors.RateLimited),
        (502, "<html>Bad gateway</html>", errors.BackendUnavailable),
        (409, {"code": 409, "message": "render id already exists"}, errors.RenderIdTaken),
        (200, {"success": False, "message": "nope"}, errors.BadRequest),
    ],
)
def test_error_mapping(status: int, body: object, expected: type[errors.NemoError]) -> None:
    error = errors.error_from_response(status, body)
    assert type(error) is expected
    assert "<html" not in str(error)


def test_success_envelopes_are_not_errors() -> None:
    assert errors.error_from_response(200, {"code": 0, "data": {}}) is None
    assert errors.error_from_response(200, {"success": True, "data": {}}) is None
    assert errors.error_from_response(200, {"taskId": "render_1", "status": "pending"}) is None


def _state() -> SessionState:
    body = json.loads((FIXTURES / "state.json").read_text())
    return SessionState.model_validate(body["data"]["state"])


def test_summary_reads_like_the_doc() -> None:
    assert summarize(_state().draft) == (
        'Timeline (3 tracks): 1. Video: city timelapse (0–10 s) 2. Music: Lo-fi (0–10 s, 35%) '
        '3. Title: "Urban Dreams" (0–3 s)'
    )
    assert summarize(Draft()) == "Timeline: empty"


def test_draft_tolerates_unknown_keys() -> None:
    draft = Draft.model_validate({"t": [{"tt": 9, "sg": [{"d": 500, "zz": 1}], "extra": True}], "v": 3})
    assert draft.exportable
    assert "type 9" in summarize(draft)
    assert draft.model_dump()["v"] == 3


def test_draft_round_trips_the_hosted_form() -> None:
    body = json.loads((FIXTURES / "state.json").read_text())
    raw = body["data"]["state"]["draft"]
    draft = Draft.model_validate(raw)
    assert draft.to_wire() == raw
    assert draft.model_dump(mode="json", by_alias=True, exclude_unset=True) == raw
    assert SessionState.model_validate(body["data"]["state"]).draft.model_dump(mode="json") == raw
    assert (draft.t[1].sg[0].m.volume, draft.t[2].sg[0].m.text, draft.m.width) == (0.35, "Urban Dreams", 1920)


def test_draft_keeps_unknown_keys_and_wrong_values_at_every_level() -> None:
    raw = {
        "v": 3,
        "t": [
            {
                "tt": 0,
                "lane": [1, {"x": None}],
                "sg": [
                    {"d": 500, "zz": 1, "m": {"in": 0, "out": 500.5, "start": "soon", "deep": {"a": None}}},
                    {"d": 1.5, "m": {"src": None, "speed": True, "volume": "loud"}},
                ],
            },
            {"tt": "7", "sg": "not a list"},
            {"sg": [{"m": "not an object"}, 5]},
        ],
        "m": {"width": 10, "weird": True, "notes": [1], "fit": 2},
    }
    draft = Draft.model_validate(json.loads(json.dumps(raw)))
    assert draft.to_wire() == raw
    first = draft.t[0].sg[0].m
    # Typed reads see what could be read; a wrong-typed value reads as unset.
    assert (first.in_, first.out, first.start, draft.t[0].sg[1].m.speed, draft.m.fit) == (0, 500.5, None, None, None)
    assert summarize(draft).startswith("Timeline (1 track): 1. Video")
    # An edit writes the typed value in place of the raw one, under the same key.
    first.start = 0
    assert draft.to_wire()["t"][0]["sg"][0]["m"] == {"in": 0, "out": 500.5, "start": 0, "deep": {"a": None}}


def test_an_edited_draft_writes_only_what_it_holds() -> None:
    draft = Draft.empty()
    assert draft.to_wire() == {"t": [], "m": {}}
    track = Track(tt=0, sg=[Segment(d=1000, m=SegmentMeta(src="u", start=0, in_=0, out=1000))])
    draft.t.append(track)
    draft.m.resolution = "720p"
    assert draft.to_wire() == {
        "t": [{"tt": 0, "sg": [{"d": 1000, "m": {"src": "u", "start": 0, "in": 0, "out": 1000}}]}],
        "m": {"resolution": "720p"},
    }
    # A part that was never given but is filled in place is written too.
    bare = Draft.model_validate({"t": [{"tt": 1}]})
    bare.t[0].sg.append(Segment(d=5))
    assert bare.to_wire() == {"t": [{"tt": 1, "sg": [{"d": 5}]}]}


def test_change_summary_in_words() -> None:
    after = _state().draft
    before = Draft.model_validate({"t": [after.t[0].model_dump()], "m": dict(after.m)})
    assert describe_changes(before, after) == ["added a Music track 0–10 s", "added the title 'Urban Dreams' (0–3 s)"]

    retitled = after.model_copy(deep=True)
    retitled.t[2].sg[0].m.text = "City Nights"
    retitled.t[0].sg[0].d = 8000
    assert describe_changes(after, retitled) == ["video now 0–8 s (was 0–10 s)", "title now 'City Nights'"]
    assert describe_changes(after, after) == []


def test_summary_and_changes_in_chinese() -> None:
    after = _state().draft
    assert summarize(after, "zh") == (
        "时间线（3 条轨道）：1. 视频：city timelapse（0–10 秒） 2. 音乐：Lo-fi（0–10 秒，35%） "
        "3. 标题：“Urban Dreams”（0–3 秒）"
    )
    before = Draft.model_validate({"t": [after.t[0].model_dump()], "m": dict(after.m)})
    assert describe_changes(before, after, "zh") == ["添加了音乐轨道 0–10 秒", "添加了标题“Urban Dreams”（0–3 秒）"]
