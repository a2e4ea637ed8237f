"""A session's draft history: what "undo", "redo" and "start over" step through.

Each state is the draft as the wire carries it, with the canvas settings that go with it. A turn that
changes the draft pushes the state before it; "undo" moves back one state and "redo" forward again; any
new change forgets what was undone. A change made between turns (an upload) counts as a step of its own,
so "undo" after an upload takes the upload off the timeline rather than an older edit with it. At most
``LIMIT`` states are kept, oldest dropped first; they are saved with the session (``localnemo.state``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from bot.nemo.timeline_model import Draft
from localnemo import timeline
from localnemo.state import SessionRecord

LIMIT = 50

State = dict[str, Any]


def snapshot(session: SessionRecord) -> State:
    return {"draft": session.draft.to_wire(), "canvas": copy.deepcopy(session.canvas_config)}


def same(one: State, other: State) -> bool:
    """Whether two states hold the same edit (values at their defaults, like speed 1, count as absent)."""
    return timeline.effective_wire(one["draft"]) == timeline.effective_wire(other["draft"])


def _restore(session: SessionRecord, state: State) -> None:
    session.draft = Draft.model_validate(state["draft"])
    session.canvas_config = copy.deepcopy(state.get("canvas") or {})


def _push(stack: list[State], state: State) -> None:
    stack.append(state)
    del stack[:-LIMIT]


def begin(session: SessionRecord) -> State:
    """At the start of a turn: the state now. A change since the last turn (an upload) becomes a step."""
    now = snapshot(session)
    seen = session.draft_seen
    if seen is not None and not same(seen, now):
        _push(session.history, seen)
        session.undone.clear()
    session.draft_seen = now
    return now


def record(session: SessionRecord, before: State) -> bool:
    """At the end of a turn: remember ``before`` when the turn changed the draft. Whether it did."""
    now = snapshot(session)
    session.draft_seen = now
    if same(now, before):
        return False
    _push(session.history, before)
    session.undone.clear()
    return True


def undo(session: SessionRecord) -> bool:
    if not session.history:
        return False
    _push(session.undone, snapshot(session))
    _restore(session, session.history.pop())
    session.draft_seen = snapshot(session)
    return True


def redo(session: SessionRecord) -> bool:
    if not session.undone:
        return False
    _push(session.history, snapshot(session))
    _restore(session, session.undone.pop())
    session.draft_seen = snapshot(session)
    return True


def start_over(session: SessionRecord) -> bool:
    """The draft as the uploads made it, before any edit (one step: "undo" brings the edits back)."""
    fresh = SessionRecord(
        session.session_id, session.task_id, session.task_name, session.language, session.user_id, session.folder
    )
    for info in session.video_infos:
        if info.get("file_type") in ("video", "image", "audio"):
            timeline.place_upload(fresh, dict(info), Path(str(info.get("filename") or "clip")).stem or "clip")
    target = {"draft": fresh.draft.to_wire(), "canvas": fresh.canvas_config}
    now = snapshot(session)
    if same(target, now):
        return False
    _push(session.history, now)
    session.undone.clear()
    _restore(session, target)
    session.draft_seen = snapshot(session)
    return True
