"""Where someone speaks in a clip, read from the pause analysis (``localnemo.media.analyse_audio``).

Sound is whatever ``silencedetect`` does not call silence (a level rule: louder than the threshold). Sound
between two pauses is one *utterance*; it counts as speech only when it holds at least ``min_speech_ms`` of
sound (a duration rule). A keyboard click, a tap on the microphone or a door is 20–80 ms of sound standing
alone in a pause, however loud; the shortest thing a person says on its own ("so", "OK", "mm") lasts longer
than that, and sounds inside a sentence are never alone (the gaps between words are shorter than a pause).

Why not a voice-activity detector: measured on 20–40 ms bursts of noise at speech level, WebRTC's VAD
(``webrtcvad-wheels``, 10 and 30 ms frames, every aggressiveness) calls 80–150 ms around each click speech, so
a duration rule would still be needed after it; it calls a steady 300 Hz tone "not speech" in modes 1–3, so it
would change what counts as a pause in every clip whose sound is not a voice; and it needs the sound decoded
into Python. Silero's VAD needs PyTorch and a model file. The rule here needs nothing but the one analysis
pass that is already kept per upload.
"""

from __future__ import annotations

from localnemo.media import AudioAnalysis

# Sound between pauses shorter than this is not speech: a click is 20–40 ms (with its ring, up to ~80 ms).
MIN_SPEECH_MS = 120


def utterances(analysis: AudioAnalysis, *, min_silence_ms: float) -> list[tuple[float, float, float]]:
    """(start, end, sound) in ms for each stretch between pauses of at least ``min_silence_ms``: its edges
    and how much of it is sound (shorter silences inside it are not counted)."""
    duration = analysis.duration * 1000
    silences = [(a * 1000, b * 1000) for a, b in analysis.silences]
    found: list[tuple[float, float, float]] = []
    position = 0.0
    for start, end in [*(s for s in silences if s[1] - s[0] >= min_silence_ms), (duration, duration)]:
        if start > position:
            quiet = sum(max(0.0, min(b, start) - max(a, position)) for a, b in silences)
            found.append((position, start, start - position - quiet))
        position = max(position, end)
    return found


def speech(
    analysis: AudioAnalysis, *, min_silence_ms: float, min_speech_ms: float = MIN_SPEECH_MS
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(speech, blips): the utterances that are speech, and the ones too short to be (ms, source time)."""
    spoken: list[tuple[float, float]] = []
    blips: list[tuple[float, float]] = []
    for start, end, sound in utterances(analysis, min_silence_ms=min_silence_ms):
        (spoken if sound >= min_speech_ms else blips).append((start, end))
    return spoken, blips
