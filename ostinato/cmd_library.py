"""``ostinato library``: browse and edit a pattern library (see ``docs/library.md``).

    ostinato library --library FILE list [--tag T] [--stream S] [--since T] [--until T]
    ostinato library show ID
    ostinato library query clip.wav [-k 10] [--model DIR]    # by example
    ostinato library query --id ID | --tag T | --stream S | --since T --until T
    ostinato library tag ID TAG... [--remove]
    ostinato library rename ID NAME
    ostinato library merge INTO FROM...
    ostinato library delete ID...
    ostinato library export FILE.jsonl / import FILE.jsonl

Times (``--since``/``--until``) are ISO 8601 (``2025-01-31T12:00``) or Unix seconds.
``--json`` prints machine-readable output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_LIBRARY", "register", "run"]

DEFAULT_LIBRARY = Path(os.environ.get("OSTINATO_LIBRARY", Path.home() / ".local" / "share" / "ostinato" / "patterns.db"))


def _time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is neither Unix seconds nor ISO 8601") from e
    return (when if when.tzinfo else when.astimezone()).timestamp()


def register(sub: Any) -> None:
    """Add the ``library`` subcommand and its actions."""
    p = sub.add_parser("library", help="browse and edit a pattern library")
    p.add_argument("--library", type=Path, default=DEFAULT_LIBRARY, help=f"library file (default {DEFAULT_LIBRARY}, or $OSTINATO_LIBRARY)")
    p.add_argument("--json", action="store_true", help="JSON output")
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--tag", default=None)
    filters.add_argument("--stream", default=None)
    filters.add_argument("--since", type=_time, default=None, help="occurrences at or after (ISO 8601 or Unix s)")
    filters.add_argument("--until", type=_time, default=None, help="occurrences at or before")
    filters.add_argument("--limit", type=int, default=100)
    acts.add_parser("list", parents=[filters], help="list patterns, most recently updated first")
    a = acts.add_parser("show", help="one pattern with occurrences and relationships")
    a.add_argument("id")
    a = acts.add_parser("query", parents=[filters], help="by example (CLIP) or by id/tag/stream/time")
    a.add_argument("clip", nargs="?", type=Path, default=None, help="audio clip to find similar patterns to")
    a.add_argument("--id", default=None, help="patterns similar to this pattern")
    a.add_argument("-k", type=int, default=10, help="results by similarity (default 10)")
    a.add_argument("--model", type=Path, default=None, help="exported Wav2Vec2 dir, for wav2vec2 libraries")
    a = acts.add_parser("tag", help="add or remove tags")
    a.add_argument("id")
    a.add_argument("tags", nargs="+")
    a.add_argument("--remove", action="store_true")
    a = acts.add_parser("rename", help="name a pattern")
    a.add_argument("id")
    a.add_argument("name")
    a = acts.add_parser("merge", help="merge patterns into the first one")
    a.add_argument("into")
    a.add_argument("sources", nargs="+")
    a = acts.add_parser("delete", help="delete patterns")
    a.add_argument("ids", nargs="+")
    a = acts.add_parser("export", help="write the library as JSON lines")
    a.add_argument("file", type=Path)
    a = acts.add_parser("import", help="add patterns from an export")
    a.add_argument("file", type=Path)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Dispatch the action."""
    from ostinato.stream.library import PatternLibrary

    readonly = args.action in ("list", "show", "query", "export")
    with PatternLibrary(args.library, readonly=readonly) as lib:
        return int(_ACTIONS[args.action](lib, args))


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).isoformat(timespec="seconds") if ts else "-"


def _print_patterns(rows: list[tuple[Any, float | None]], as_json: bool) -> None:
    if as_json:
        print(json.dumps([{**p.summary(), **({"similarity": round(s, 4)} if s is not None else {})} for p, s in rows], indent=1))
        return
    if not rows:
        print("(no patterns)")
        return
    for p, s in rows:
        sim = f"{s:6.3f} " if s is not None else ""
        tags = ",".join(p.tags) or "-"
        print(f"{sim}{p.id}  {p.name or '-':<16} {p.duration_s:5.1f}s  x{p.occurrence_count:<4} last {_when(p.last_seen)}  tags {tags}")


def _list(lib: Any, args: argparse.Namespace) -> int:
    rows = lib.list(tag=args.tag, stream=args.stream, since=args.since, until=args.until, limit=args.limit)
    _print_patterns([(p, None) for p in rows], args.json)
    return 0


def _show(lib: Any, args: argparse.Namespace) -> int:
    p = lib.get(args.id)
    occ = lib.occurrences(args.id)
    rel = lib.relationships(args.id)
    if args.json:
        occurrences = [
            {"stream": o.stream, "start_s": o.start_s, "end_s": o.end_s, "score": o.score, "recorded_at": o.recorded_at} for o in occ
        ]
        print(json.dumps({**p.summary(), "occurrences": occurrences, "relationships": rel}, indent=1))
        return 0
    print(f"{p.id}  name {p.name or '-'}  feature {p.feature}  {p.duration_s:.2f} s  tags {','.join(p.tags) or '-'}")
    print(f"created {_when(p.created_at)}  updated {_when(p.updated_at)}  first {_when(p.first_seen)}  last {_when(p.last_seen)}")
    if p.metadata:
        print(f"metadata {json.dumps(p.metadata)}")
    print(f"occurrences ({len(occ)}):")
    for o in occ:
        print(f"  {o.stream}  {o.start_s:8.2f}-{o.end_s:8.2f} s  score {o.score:.3f}  at {_when(o.recorded_at)}")
    if rel:
        print("relationships:")
        for r in rel:
            print(f"  {r['src']} {r['kind']} {r['dst']}  x{r['count']}  last {_when(r['last_seen'])}")
    return 0


def _query(lib: Any, args: argparse.Namespace) -> int:
    if args.clip is None and args.id is None:
        return _list(lib, args)
    vector = lib.get(args.id).embedding if args.id is not None else _clip_embedding(lib, args)
    rows = lib.query_vector(vector, args.k + (1 if args.id else 0))
    if args.id is not None:
        own = lib.get(args.id).id
        rows = [(p, s) for p, s in rows if p.id != own][: args.k]
    keep = {p.id for p in lib.list(tag=args.tag, stream=args.stream, since=args.since, until=args.until, limit=10**9)} \
        if (args.tag or args.stream or args.since or args.until) else None
    rows = [(p, s) for p, s in rows if keep is None or p.id in keep]
    _print_patterns(rows, args.json)
    return 0


def _clip_embedding(lib: Any, args: argparse.Namespace) -> Any:
    from ostinato.runtime.audio import load_audio
    from ostinato.runtime.logmel import LogMel
    from ostinato.stream.embedding import FeatureSpaceMismatch, query_embedding
    from ostinato.stream.library import LibraryError

    space = lib.feature_space()
    if space is None:
        raise LibraryError(f"library {str(args.library)!r} is empty", hint="record patterns first: ostinato match/run --library")
    features = str(space["feature"]).rsplit("/", 1)[0]
    audio, _ = load_audio(args.clip)
    lm = LogMel().compute(audio)
    if features == "logmel":
        frames = lm.features.frames
    else:
        frames = _model_frames(args, features, audio)
    try:
        return query_embedding(frames, lm.energy_db, str(space["feature"]))
    except FeatureSpaceMismatch as e:
        raise LibraryError(str(e), hint="pass the --model the library was built with") from e
    except ValueError as e:
        raise LibraryError(f"{str(args.clip)!r}: {e}") from e


def _model_frames(args: argparse.Namespace, features: str, audio: Any) -> Any:
    from ostinato.runtime.wav2vec2 import Wav2Vec2Model
    from ostinato.stream.embedding import model_output_for
    from ostinato.stream.library import LibraryError

    if args.model is None:
        raise LibraryError(f"this library holds {features} patterns", hint="pass --model DIR (the model the library was built with)")
    with Wav2Vec2Model.from_dir(args.model) as model:
        return model.features(audio, 16000, output=model_output_for(features)).frames


def _tag(lib: Any, args: argparse.Namespace) -> int:
    lib.tag(args.id, *args.tags, remove=args.remove)
    print(f"{args.id}: tags {','.join(lib.get(args.id).tags) or '-'}")
    return 0


def _rename(lib: Any, args: argparse.Namespace) -> int:
    lib.rename(args.id, args.name)
    print(f"{args.id}: name {args.name}")
    return 0


def _merge(lib: Any, args: argparse.Namespace) -> int:
    lib.merge(args.into, *args.sources)
    print(f"merged {', '.join(args.sources)} into {args.into} ({lib.get(args.into).occurrence_count} occurrences)")
    return 0


def _delete(lib: Any, args: argparse.Namespace) -> int:
    for pid in args.ids:
        lib.delete(pid)
    print(f"deleted {len(args.ids)} pattern(s)")
    return 0


def _export(lib: Any, args: argparse.Namespace) -> int:
    print(f"exported {lib.export_json(args.file)} patterns to {args.file}", file=sys.stderr)
    return 0


def _import(lib: Any, args: argparse.Namespace) -> int:
    print(f"imported {lib.import_json(args.file)} patterns into {args.library}", file=sys.stderr)
    return 0


_ACTIONS = {
    "list": _list, "show": _show, "query": _query, "tag": _tag, "rename": _rename,
    "merge": _merge, "delete": _delete, "export": _export, "import": _import,
}
