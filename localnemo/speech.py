"""Speech to text, offline: the words of a clip with their times, for captions and for cuts that respect words.

One small interface, two engines:

- ``PocketsphinxEngine``: always there (a runtime dependency whose wheel carries a US-English acoustic model,
  language model and dictionary). Recognition with ``maxhmmpf`` bounded (about 0.2 CPU-s per second of
  audio); forced alignment (``set_align_text``) when the words are known, from a script.
- ``WhisperEngine``: faster-whisper (``pip install 'nemobot[whisper]'``), far more accurate and multilingual,
  used when a model can load: a local CTranslate2 model directory, or a model name the library may fetch when
  the machine has a network. It has no forced alignment of its own; ``align`` goes to pocketsphinx.

``choose_engine`` picks one (Whisper when it can load, else pocketsphinx; a setting can force either) and
logs the choice once. Engines work on 16 kHz mono 16-bit PCM (``load_pcm`` decodes any upload with FFmpeg)
and are blocking: call them in a worker thread (``transcribe``/``align`` here do). Long audio is cut at its
pauses (``chunks``) before recognition, which keeps the decoder's search small and gives progress.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from localnemo.media import ffmpeg_exe
from localnemo.processes import spawn

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
BYTES_PER_SECOND = SAMPLE_RATE * 2
# Recognition works on pieces of at most this long, cut in the middle of pauses where there are any.
MAX_CHUNK_MS = 20_000
# Longer audio is not transcribed: an hour of speech is far past what captions in a chat are for.
MAX_AUDIO_SECONDS = 3600
# The decoder's beam: fewer active HMMs per frame is faster at a small cost in accuracy (measured on the
# LibriVox recordings of pocketsphinx-testdata: WER 0.28 at the default, 0.30 here, at 0.2 CPU-s per second).
MAX_HMM_PER_FRAME = 2000

EngineName = Literal["auto", "pocketsphinx", "whisper"]
Progress = Callable[[float], None]


# The longest a recognised word may last; longer "words" are not speech (see PocketSphinx._words).
MAX_WORD_MS = 1500

class SpeechError(RuntimeError):
    """Speech recognition cannot be done as asked; the message is plain language."""


class LanguageNotAvailable(SpeechError):
    """No engine here knows the language (e.g. Chinese without a Whisper model)."""

    def __init__(self, language: str) -> None:
        super().__init__(f"no speech model for {language!r}")
        self.language = language


@dataclass(frozen=True)
class Word:
    """A recognised (or aligned) word and when it is heard, in ms from the start of the audio."""

    text: str
    start_ms: int
    end_ms: int


def words_to_json(words: Sequence[Word]) -> list[list[Any]]:
    """Words as they are kept (a session's analyses, the render workers' transcripts): ``[text, start, end]``."""
    return [[w.text, w.start_ms, w.end_ms] for w in words]


def words_from_json(kept: Sequence[Sequence[Any]] | None) -> list[Word]:
    return [Word(str(w), int(a), int(b)) for w, a, b in kept or []]


class SpeechEngine(Protocol):
    name: str

    def languages(self) -> frozenset[str]:
        """The languages (``en``, ``zh``, ...) it transcribes; an empty set means any."""
        ...

    def transcribe(self, pcm: bytes, language: str, progress: Progress | None = None) -> list[Word]:
        """The words in 16 kHz mono s16le ``pcm`` (blocking)."""
        ...

    def align(self, pcm: bytes, text: str) -> list[Word]:
        """When each word of ``text`` is said in ``pcm`` (blocking); words it cannot place are timed between
        their neighbours."""
        ...


# -- audio ----------------------------------------------------------------------------------------------


async def load_pcm(path: Path, *, limit_seconds: float = MAX_AUDIO_SECONDS) -> bytes:
    """The sound of a media file as 16 kHz mono s16le PCM (empty when it has none)."""
    process = await spawn(
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-v", "error", "-t", f"{limit_seconds:g}", "-i", str(path),
        "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "s16le", "-",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    if process.returncode != 0 and not out:
        log.info("localnemo.speech.no_audio path=%s error=%s", path.name, err.decode(errors="replace")[-200:])
    return out[: len(out) // 2 * 2]


def chunks(
    duration_ms: int, pauses: Sequence[tuple[float, float]], max_ms: int = MAX_CHUNK_MS
) -> list[tuple[int, int]]:
    """Pieces (ms) of audio of ``duration_ms`` to recognise one by one: cut in the middle of ``pauses``
    (seconds), each at most ``max_ms`` long where the pauses allow it (else cut hard at ``max_ms``)."""
    cuts = sorted(round((a + b) * 500) for a, b in pauses if 0 < (a + b) * 500 < duration_ms)
    pieces: list[tuple[int, int]] = []
    start = 0
    while duration_ms - start > max_ms:
        inside = [c for c in cuts if start < c <= start + max_ms and c - start >= 1000]
        end = inside[-1] if inside else start + max_ms
        pieces.append((start, end))
        start = end
    if duration_ms > start:
        pieces.append((start, duration_ms))
    return pieces


def pauses_in(pcm: bytes, *, min_ms: int = 300, frame_ms: int = 20) -> list[tuple[float, float]]:
    """Quiet stretches (seconds) of ``pcm``, relative to its own loudness: where to cut long audio."""
    import array
    import math

    samples = array.array("h")
    samples.frombytes(pcm)
    step = SAMPLE_RATE * frame_ms // 1000
    levels = []
    for index in range(0, len(samples) - step + 1, step):
        frame = samples[index : index + step : 4]
        levels.append(math.sqrt(sum(v * v for v in frame) / max(1, len(frame))))
    if not levels:
        return []
    loud = sorted(levels)[int(len(levels) * 0.9)]
    quiet = max(30.0, loud / 10)  # -20 dB under the loud frames
    found: list[tuple[float, float]] = []
    run_start: int | None = None
    for index, level in enumerate([*levels, loud]):
        if level < quiet and run_start is None:
            run_start = index
        elif level >= quiet and run_start is not None:
            if (index - run_start) * frame_ms >= min_ms:
                found.append((run_start * frame_ms / 1000, index * frame_ms / 1000))
            run_start = None
    return found


# -- words ----------------------------------------------------------------------------------------------

_TOKEN_RE = re.compile(r"[\w']+(?:[-.][\w']+)*", re.UNICODE)
# Spoken forms the dictionary knows for what scripts write.
_SPOKEN = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint", "&": "and"}


def script_tokens(text: str) -> list[str]:
    """The words of a script as written (punctuation kept on the word it follows)."""
    return [token for token in text.split() if _TOKEN_RE.search(token)]


def spoken(token: str) -> str:
    """A written word as the dictionary would have it: lower case, no punctuation."""
    word = "".join(_TOKEN_RE.findall(token.lower())).strip("'.")
    return _SPOKEN.get(word, word)


def _interpolate(tokens: list[str], timed: list[tuple[int, int] | None], end_ms: int) -> list[Word]:
    """Words for ``tokens`` where some have no time: they share the gap between their timed neighbours."""
    words: list[Word] = []
    index = 0
    while index < len(tokens):
        if timed[index] is not None:
            start, end = timed[index]  # type: ignore[misc]
            words.append(Word(tokens[index], start, end))
            index += 1
            continue
        run_end = index
        while run_end < len(tokens) and timed[run_end] is None:
            run_end += 1
        low = words[-1].end_ms if words else 0
        following = timed[run_end] if run_end < len(tokens) else None
        high = following[0] if following is not None else end_ms
        share = max(0, high - low) / (run_end - index)
        for offset in range(run_end - index):
            a = round(low + share * offset)
            words.append(Word(tokens[index + offset], a, max(a, round(low + share * (offset + 1)))))
        index = run_end
    return words


def _offset(ms: int) -> int:
    """Where ``ms`` falls in 16 kHz s16le PCM (bytes, on a sample boundary)."""
    return ms * SAMPLE_RATE // 1000 * 2


# -- pocketsphinx ---------------------------------------------------------------------------------------


class PocketsphinxEngine:
    """CMU pocketsphinx with the US-English model inside its wheel. One decoder, used under a lock (a decoder
    is not thread-safe); it loads on first use (about 0.5 s, 100 MB)."""

    name = "pocketsphinx"

    def __init__(self, *, max_hmm_per_frame: int = MAX_HMM_PER_FRAME) -> None:
        self.max_hmm_per_frame = max_hmm_per_frame
        self._decoder: Any = None
        self._lock = threading.Lock()

    def languages(self) -> frozenset[str]:
        return frozenset({"en"})

    def _get(self) -> Any:
        if self._decoder is None:
            from pocketsphinx import Decoder  # type: ignore[import-untyped]

            self._decoder = Decoder(samprate=SAMPLE_RATE, maxhmmpf=self.max_hmm_per_frame, loglevel="FATAL")
            self._frame_rate = int(self._decoder.config["frate"])
        return self._decoder

    def _words(self, decoder: Any, offset_ms: int) -> list[Word]:
        words: list[Word] = []
        per_frame = 1000 / self._frame_rate
        for seg in decoder.seg() or ():
            text = re.sub(r"\(\d+\)$", "", seg.word)
            if text.startswith(("<", "[", "+")):
                continue  # <s>, </s>, <sil>, [NOISE], +UM+: not words anyone said
            start = offset_ms + round(seg.start_frame * per_frame)
            end = offset_ms + round((seg.end_frame + 1) * per_frame)
            if end - start > MAX_WORD_MS:
                # Nobody says one word for seconds: a steady tone or hum "recognised" as a word (pocketsphinx
                # heard three 2-3 s words in the sample's sine tone). Captions of that would be invented.
                continue
            words.append(Word(text, start, end))
        return words

    def _decode(self, decoder: Any, pcm: bytes) -> None:
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()

    def transcribe(self, pcm: bytes, language: str, progress: Progress | None = None) -> list[Word]:
        if language not in self.languages():
            raise LanguageNotAvailable(language)
        duration = len(pcm) * 1000 // BYTES_PER_SECOND
        pieces = chunks(duration, pauses_in(pcm))
        words: list[Word] = []
        with self._lock:
            decoder = self._get()
            for number, (start, end) in enumerate(pieces):
                self._decode(decoder, pcm[_offset(start) : _offset(end)])
                words.extend(self._words(decoder, start))
                if progress is not None:
                    progress((number + 1) / len(pieces))
        return words

    def align(self, pcm: bytes, text: str) -> list[Word]:
        tokens = script_tokens(text)
        if not tokens:
            return []
        duration = len(pcm) * 1000 // BYTES_PER_SECOND
        # A written word may be several dictionary words ("ill-disposed", "cold-hearted").
        parts = [[spoken(part) for part in re.split(r"[-‐‑–/]", token) if spoken(part)] for token in tokens]
        with self._lock:
            decoder = self._get()
            known = [
                i for i, pieces in enumerate(parts)
                if pieces and all(decoder.lookup_word(piece) is not None for piece in pieces)
            ]  # fmt: skip
            timed: list[tuple[int, int] | None] = [None] * len(tokens)
            if known:
                try:
                    decoder.set_align_text(" ".join(" ".join(parts[i]) for i in known))
                    self._decode(decoder, pcm)
                    aligned = self._words(decoder, 0)
                except RuntimeError as exc:
                    log.info("localnemo.speech.align_error error=%s", exc)
                    aligned = []
                finally:
                    decoder.activate_search()  # back to recognition with the language model
                if len(aligned) == sum(len(parts[i]) for i in known):
                    position = 0
                    for index in known:
                        first, last = aligned[position], aligned[position + len(parts[index]) - 1]
                        timed[index] = (first.start_ms, last.end_ms)
                        position += len(parts[index])
                else:
                    log.info("localnemo.speech.align_failed words=%s aligned=%s", len(known), len(aligned))
        if all(slot is None for slot in timed):
            raise SpeechError("the script could not be matched to the speech")
        return _interpolate(tokens, timed, duration)


# -- faster-whisper -------------------------------------------------------------------------------------

Loader = Callable[[str], Any]


def _whisper_loader(model: str) -> Any:
    from faster_whisper import WhisperModel  # type: ignore[import-not-found,unused-ignore]

    return WhisperModel(model, device="cpu", compute_type="int8")


class WhisperEngine:
    """faster-whisper on a CTranslate2 model (a directory, or a name the library fetches when it can). The
    model loads on first use through ``loader`` (``WhisperModel(model)``)."""

    name = "whisper"

    def __init__(self, model: str, *, loader: Loader = _whisper_loader, aligner: SpeechEngine | None = None) -> None:
        self.model_name = model
        self._loader = loader
        self._model: Any = None
        self._lock = threading.Lock()
        self._aligner = aligner

    def languages(self) -> frozenset[str]:
        return frozenset()

    def load(self) -> Any:
        with self._lock:
            if self._model is None:
                self._model = self._loader(self.model_name)
            return self._model

    def transcribe(self, pcm: bytes, language: str, progress: Progress | None = None) -> list[Word]:
        model = self.load()
        audio = _float_samples(pcm)
        duration = len(pcm) / BYTES_PER_SECOND
        segments, _info = model.transcribe(audio, language=language, word_timestamps=True, vad_filter=True)
        words: list[Word] = []
        for segment in segments:
            for word in segment.words or []:
                text = str(word.word).strip()
                if text:
                    words.append(Word(text, round(word.start * 1000), round(word.end * 1000)))
            if progress is not None and duration > 0:
                progress(min(1.0, float(segment.end) / duration))
        return words

    def align(self, pcm: bytes, text: str) -> list[Word]:
        if self._aligner is None:
            self._aligner = PocketsphinxEngine()
        return self._aligner.align(pcm, text)


# -- choosing -------------------------------------------------------------------------------------------


def _float_samples(pcm: bytes) -> Any:
    """s16le PCM as float samples in [-1, 1): a numpy array (faster-whisper brings numpy), else a plain array."""
    try:
        import numpy as np  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        import array

        ints = array.array("h")
        ints.frombytes(pcm)
        return array.array("f", (v / 32768.0 for v in ints))
    return np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0


def whisper_available() -> bool:
    try:
        import faster_whisper  # noqa: F401
    except ImportError:
        return False
    return True


def choose_engine(
    preference: EngineName = "auto", whisper_model: str | None = None, *, loader: Loader | None = None
) -> SpeechEngine:
    """The engine to use: Whisper when a model is configured and loads, else pocketsphinx (``preference``
    forces one). Logged once, by the caller that keeps the engine."""
    sphinx = PocketsphinxEngine()
    if preference == "pocketsphinx" or (preference == "auto" and not whisper_model):
        log.info("localnemo.speech.engine name=pocketsphinx reason=%s", preference)
        return sphinx
    if loader is None and not whisper_available():
        if preference == "whisper":
            raise SpeechError("faster-whisper is not installed: pip install 'nemobot[whisper]'")
        log.info("localnemo.speech.engine name=pocketsphinx reason=no_faster_whisper")
        return sphinx
    model = whisper_model or "small"
    engine = WhisperEngine(model, loader=loader or _whisper_loader, aligner=sphinx)
    try:
        started = time.monotonic()
        engine.load()
    except Exception as exc:  # a missing directory, no network for a model name, a broken model
        if preference == "whisper":
            raise SpeechError(f"the Whisper model {model!r} could not be loaded: {exc}") from exc
        log.warning("localnemo.speech.whisper_unavailable model=%s error=%s", model, exc)
        log.info("localnemo.speech.engine name=pocketsphinx reason=whisper_failed")
        return sphinx
    log.info("localnemo.speech.engine name=whisper model=%s load_s=%.1f", model, time.monotonic() - started)
    return engine


class Speech:
    """The server's speech recogniser: the engine is chosen on first use (and logged once), and work runs in a
    worker thread so the event loop stays free."""

    def __init__(self, preference: EngineName = "auto", whisper_model: str | None = None,
                 *, loader: Loader | None = None) -> None:  # fmt: skip
        self.preference = preference
        self.whisper_model = whisper_model
        self._loader = loader
        self._engine: SpeechEngine | None = None
        self._choosing = asyncio.Lock()

    async def engine(self) -> SpeechEngine:
        async with self._choosing:
            if self._engine is None:
                self._engine = await asyncio.to_thread(
                    choose_engine, self.preference, self.whisper_model, loader=self._loader
                )
            return self._engine

    async def transcribe(self, audio_path: Path, language: str, progress: Progress | None = None) -> list[Word]:
        engine = await self.engine()
        languages = engine.languages()
        if languages and language not in languages:
            raise LanguageNotAvailable(language)
        pcm = await load_pcm(audio_path)
        if not pcm:
            return []
        return await asyncio.to_thread(engine.transcribe, pcm, language, progress)

    async def recognise(
        self, audio_path: Path, language: str, progress: Progress | None = None
    ) -> tuple[list[Word], str]:
        """The words heard in the file and the name of the engine that heard them."""
        words = await self.transcribe(audio_path, language, progress)
        return words, (await self.engine()).name

    async def align(self, audio_path: Path, text: str) -> list[Word]:
        engine = await self.engine()
        pcm = await load_pcm(audio_path)
        if not pcm:
            return []
        return await asyncio.to_thread(engine.align, pcm, text)


# -- measuring ------------------------------------------------------------------------------------------


def normalised(words: Sequence[str]) -> list[str]:
    """Words compared for accuracy: spoken forms, lower case, no punctuation."""
    return [spoken(word) for word in words]


def matched_pairs(reference: Sequence[str], hypothesis: Sequence[str]) -> tuple[int, list[tuple[int, int]]]:
    """The word-level edit distance between two word lists, and the (reference, hypothesis) index pairs that
    match exactly on a cheapest path."""
    ref, hyp = normalised(reference), normalised(hypothesis)
    rows, cols = len(ref) + 1, len(hyp) + 1
    cost = [[0] * cols for _ in range(rows)]
    for i in range(rows):
        cost[i][0] = i
    for j in range(cols):
        cost[0][j] = j
    for i in range(1, rows):
        for j in range(1, cols):
            same = ref[i - 1] == hyp[j - 1]
            cost[i][j] = min(cost[i - 1][j] + 1, cost[i][j - 1] + 1, cost[i - 1][j - 1] + (0 if same else 1))
    pairs: list[tuple[int, int]] = []
    i, j = len(ref), len(hyp)
    while i > 0 and j > 0:
        same = ref[i - 1] == hyp[j - 1]
        if cost[i][j] == cost[i - 1][j - 1] + (0 if same else 1):
            if same:
                pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif cost[i][j] == cost[i - 1][j] + 1:
            i -= 1
        else:
            j -= 1
    return cost[-1][-1], pairs[::-1]


def word_error_rate(reference: Sequence[str], hypothesis: Sequence[str]) -> float:
    """(substitutions + deletions + insertions) / reference words."""
    distance, _ = matched_pairs(reference, hypothesis)
    return distance / max(1, len(normalised(reference)))
