"""The terminal that behaves (issue 11, point 5): how the embedded backend is named, and the chat under a
pseudo-terminal (prompt, progress redrawn in place, Ctrl-C, ./videos/)."""

from __future__ import annotations

import pytest

from bot.explain import explain
from bot.nemo import errors
from bot.texts import _CATALOGUE, backend_text


@pytest.mark.parametrize("error", [
    errors.TokenInvalid("x"), errors.SessionNotFound("x"), errors.OutOfCredits("x"), errors.ExportBlocked("x"),
    errors.RateLimited("x"), errors.BackendUnavailable("x"), errors.StreamInterrupted("x"),
    errors.StreamTimeout("x"), errors.ExportFailed("{raw}"), errors.StreamError("{raw}"),
])
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_with_the_embedded_backend_no_error_speaks_of_nemovideo(error: errors.NemoError, lang: str) -> None:
    words = explain(error, lang, registration_link=None, upload_limit=1, backend="local")
    assert "NemoVideo" not in words
    hosted = explain(error, lang, registration_link=None, upload_limit=1, backend="hosted")
    assert words != hosted or "NemoVideo" not in hosted


def test_every_text_that_names_nemovideo_has_a_local_wording() -> None:
    naming = [key for key, (en, zh) in _CATALOGUE.items()
              if "NemoVideo" in en + zh and "@" not in key and not key.startswith("agent.")]
    for key in naming:
        for lang in ("en", "zh"):
            assert "NemoVideo" not in backend_text(key, lang, "local", reason="r", link="l"), key
    assert "the local editor" in backend_text("export_lost", "en", "local")
    assert "本地编辑器" in backend_text("export_lost", "zh", "local")
