"""``seminote-edge analyze``: the live pipeline over a file, fed in 20 ms chunks in order."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..audio import iter_file_chunks, probe_duration_s
from ..errors import SeminoteEdgeError
from ..events import Event, to_json
from ..pipeline import Observer, StreamingPipeline
from ..settings import EdgeSettings
from .table import Progress, TableWriter


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "analyze",
        help="run the streaming pipeline over an audio file and print its events",
        description=(
            "Runs the same causal streaming pipeline as a live session over AUDIO (any format PyAV "
            "reads), fed in 20 ms chunks in order, and prints the feedback events as they are decided."
        ),
    )
    p.add_argument("audio", metavar="AUDIO", type=Path, help="audio file (wav, flac, mp3, ogg, m4a, ...)")
    p.add_argument("--reference", metavar="PIECE", type=Path, help="reference piece (MIDI or MusicXML)")
    p.add_argument("--mode", choices=("light", "detailed"), default="light", help="analysis mode (default light)")
    p.add_argument(
        "--format", choices=("jsonl", "table"), default=None,
        help="jsonl: one event per line (default when stdout is not a terminal); table: readable view",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    fmt = args.format or ("table" if sys.stdout.isatty() else "jsonl")
    settings = EdgeSettings()
    observers: list[Observer] = []
    if args.reference is not None:  # score following against the piece: score events and a summary
        from ..scoring import ScoreObserver, load_piece

        try:
            observers.append(ScoreObserver(load_piece(args.reference)))
        except SeminoteEdgeError as exc:
            print(f"seminote-edge analyze: error: {exc}", file=sys.stderr)
            return 1
    transcriber = None
    if args.mode == "detailed":  # the transcription model, run inline so each chunk's notes come with it
        from ..inference.transcriber import transcriber_for

        try:
            transcriber = transcriber_for(settings.analysis.model_path, blocking=True)
        except SeminoteEdgeError as exc:
            print(f"seminote-edge analyze: error: {exc}", file=sys.stderr)
            return 1
    pipeline = StreamingPipeline(mode=args.mode, settings=settings.analysis, transcriber=transcriber,
                                observers=observers)
    write = _jsonl_writer() if fmt == "jsonl" else TableWriter().write
    progress = Progress(probe_duration_s(args.audio) if sys.stdout.isatty() else None)
    try:
        for chunk in iter_file_chunks(args.audio):
            for event in pipeline.process(chunk):
                write(event)
            progress.update(pipeline.now_s)
        for event in pipeline.finish():
            write(event)
    except SeminoteEdgeError as exc:
        progress.close()
        print(f"seminote-edge analyze: error: {exc}", file=sys.stderr)
        return 1
    progress.close()
    sys.stdout.flush()
    return 0


def _jsonl_writer():  # type: ignore[no-untyped-def]
    out = sys.stdout
    def write(event: Event) -> None:
        out.write(to_json(event))
        out.write("\n")
    return write
