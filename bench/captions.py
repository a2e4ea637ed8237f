"""Captions benchmark: word error rate and CPU time of each speech engine available, on the same recordings.

The recordings are the LibriVox readings in Debian's pocketsphinx-testdata (real read speech with its
transcripts; ``bash .ci/run`` installs the package). Each engine transcribes every recording, and its words
are compared with the transcript (word error rate: substitutions, deletions and insertions over the words
said, after lower-casing and spelling "mr" as "mister"). CPU time is the process's (all threads), per second
of audio. Forced alignment of the transcripts is timed too (pocketsphinx).

Engines: pocketsphinx always (at the server's beam, ``maxhmmpf`` 2000, and at the library's default for
comparison); faster-whisper when it is installed and ``--whisper-model`` (a model folder, or a name it may
download) loads.

Targets with pocketsphinx: WER ≤ 0.35 and ≤ 0.3 CPU-s per second of audio.

    .venv/bin/python bench/captions.py [--rounds 1] [--whisper-model DIR] [--data DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from localnemo.speech import (
    BYTES_PER_SECOND,
    PocketsphinxEngine,
    SpeechEngine,
    SpeechError,
    WhisperEngine,
    load_pcm,
    whisper_available,
    word_error_rate,
)

DATA = Path("/usr/share/pocketsphinx/test/data/librivox")


def recordings(folder: Path) -> list[tuple[str, bytes, list[str]]]:
    found: list[tuple[str, bytes, list[str]]] = []
    for line in (folder / "transcription").read_text().splitlines():
        words, _, name = line.rpartition("(")
        name = name.strip(" )")
        text = words.replace("<s>", "").replace("</s>", "").split()
        found.append((name, asyncio.run(load_pcm(folder / f"{name}.wav")), text))
    return found


def measure(engine: SpeechEngine, data: list[tuple[str, bytes, list[str]]], rounds: int) -> tuple[float, float]:
    """(word error rate over all recordings, CPU-s per audio second)."""
    engine.transcribe(data[0][1][: BYTES_PER_SECOND], "en")  # load the model outside the timing
    reference: list[str] = []
    heard: list[str] = []
    seconds = 0.0
    started = time.process_time()
    for _ in range(rounds):
        reference, heard = [], []
        for _name, pcm, words in data:
            reference += words
            heard += [w.text for w in engine.transcribe(pcm, "en")]
            seconds += len(pcm) / BYTES_PER_SECOND
    return word_error_rate(reference, heard), (time.process_time() - started) / seconds


def align_cost(data: list[tuple[str, bytes, list[str]]]) -> tuple[int, int, float]:
    engine = PocketsphinxEngine()
    engine.align(data[0][1], " ".join(data[0][2]))
    placed = total = 0
    seconds = 0.0
    started = time.process_time()
    for _name, pcm, words in data:
        aligned = engine.align(pcm, " ".join(words))
        total += len(words)
        placed += len(aligned)
        seconds += len(pcm) / BYTES_PER_SECOND
    return placed, total, (time.process_time() - started) / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--whisper-model", default=None)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    if not (args.data / "transcription").is_file():
        print(f"no recordings in {args.data}: apt-get install pocketsphinx-testdata")
        return 2
    data = recordings(args.data)
    audio = sum(len(pcm) for _, pcm, _ in data) / BYTES_PER_SECOND
    print(f"{len(data)} recordings, {audio:.1f} s of speech, {sum(len(w) for *_, w in data)} words\n")
    engines: list[tuple[str, SpeechEngine]] = [
        ("pocketsphinx (maxhmmpf 2000, the server's)", PocketsphinxEngine()),
        ("pocketsphinx (library default beam)", PocketsphinxEngine(max_hmm_per_frame=30_000)),
    ]
    if args.whisper_model and whisper_available():
        engines.append((f"faster-whisper ({args.whisper_model})", WhisperEngine(args.whisper_model)))
    elif args.whisper_model:
        print("faster-whisper is not installed (pip install 'nemobot[whisper]'): skipped\n")
    print(f"{'engine':<46} {'WER':>6} {'CPU-s/s':>8}")
    for label, engine in engines:
        try:
            rate, cost = measure(engine, data, args.rounds)
        except (SpeechError, OSError) as exc:
            print(f"{label:<46} failed: {exc}")
            continue
        print(f"{label:<46} {rate:>6.3f} {cost:>8.3f}")
    placed, total, cost = align_cost(data)
    print(f"\nforced alignment (pocketsphinx): {placed}/{total} words placed, {cost:.3f} CPU-s/s")
    print("targets with pocketsphinx: WER <= 0.35, <= 0.3 CPU-s/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
