"""Whole-library operations of :class:`~ostinato.stream.library.PatternLibrary`: merging
patterns, JSON-lines export and import. Called with the library's lock held."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ostinato.stream.library_schema import LibraryError

if TYPE_CHECKING:
    from ostinato.stream.library import PatternLibrary

__all__ = ["EXPORT_FORMAT", "export_patterns", "import_patterns", "merge_patterns"]

EXPORT_FORMAT = "ostinato-pattern-library/1"


def merge_patterns(lib: PatternLibrary, into_id: str, from_ids: tuple[str, ...] | list[str]) -> None:
    """Fold ``from_ids`` into ``into_id`` (see :meth:`PatternLibrary.merge`)."""
    dst = lib._key(into_id)
    sources = [lib._key(i) for i in from_ids]
    if dst in sources:
        raise LibraryError(f"cannot merge pattern {into_id!r} into itself")
    db = lib._write()
    into = lib._load(dst)
    vectors, weights = [into.embedding], [max(1, into.occurrence_count)]
    for src in sources:
        old = lib._load(src)
        vectors.append(old.embedding)
        weights.append(max(1, old.occurrence_count))
        db.execute("UPDATE occurrences SET pattern_key = ? WHERE pattern_key = ?", (dst, src))
        db.execute("INSERT OR IGNORE INTO tags(pattern_key, tag) SELECT ?, tag FROM tags WHERE pattern_key = ?", (dst, src))
        for col, other in (("src_key", "dst_key"), ("dst_key", "src_key")):
            rows = db.execute(
                f"SELECT {other}, kind, count, first_seen, last_seen FROM relationships WHERE {col} = ?", (src,)
            ).fetchall()
            for peer, kind, count, first, last in rows:
                if peer in (dst, src):
                    continue
                pair = (dst, peer) if col == "src_key" else (peer, dst)
                db.execute(
                    "INSERT INTO relationships(src_key, dst_key, kind, count, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT(src_key, dst_key, kind) DO UPDATE SET count = count + excluded.count, "
                    "first_seen = MIN(first_seen, excluded.first_seen), last_seen = MAX(last_seen, excluded.last_seen)",
                    (*pair, kind, count, first, last),
                )
        db.execute("UPDATE aliases SET new_key = ? WHERE new_key = ?", (dst, src))
        db.execute("INSERT OR REPLACE INTO aliases(old_id, new_key) VALUES (?, ?)", (old.id, dst))
        db.execute("DELETE FROM patterns WHERE key = ?", (src,))
        lib._cache.pop(src, None)
    merged = np.average(np.stack(vectors), axis=0, weights=np.asarray(weights, dtype=np.float64))
    merged = (merged / max(float(np.linalg.norm(merged)), 1e-9)).astype(np.float32)
    db.execute("UPDATE patterns SET embedding = ?, updated_at = ? WHERE key = ?", (merged.tobytes(), time.time(), dst))
    lib._cache.pop(dst, None)
    lib._index = None  # rebuilt on the next query
    lib._wrote(changed_vectors=True)


def export_patterns(lib: PatternLibrary, path: Path) -> int:
    """Write a JSON-lines export: a header line, then one line per pattern."""
    lib.commit()
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = [r[0] for r in lib._db.execute("SELECT key FROM patterns ORDER BY key")]
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(json.dumps({"format": EXPORT_FORMAT, "feature_space": lib.feature_space(), "patterns": len(keys)}) + "\n")
        for key in keys:
            p = lib._load(key)
            record: dict[str, Any] = p.summary()
            record["embedding"] = base64.b64encode(p.embedding.astype(np.float32).tobytes()).decode("ascii")
            record["occurrences"] = [
                [o.stream, o.start_s, o.end_s, o.score, o.recorded_at] for o in lib.occurrences(p.id, limit=10**9)
            ]
            record["relationships"] = [r for r in lib.relationships(p.id) if r["src"] == p.id]
            f.write(json.dumps(record) + "\n")
    tmp.replace(path)
    return len(keys)


def import_patterns(lib: PatternLibrary, path: Path) -> int:
    """Add the patterns of an export file; returns how many were added."""
    if not path.is_file():
        raise LibraryError(f"export file {str(path)!r} does not exist")
    with path.open(encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    try:
        header = json.loads(lines[0]) if lines else {}
        records = [json.loads(line) for line in lines[1:]]
    except json.JSONDecodeError as e:
        raise LibraryError(f"{str(path)!r} is not a pattern library export: {e}") from e
    if header.get("format") != EXPORT_FORMAT:
        raise LibraryError(f"{str(path)!r} has format {header.get('format')!r}; expected {EXPORT_FORMAT!r}")
    with lib.group():  # one operation: a bad record or a crash leaves none of the file, else all of it
        ids: dict[str, str] = {}
        for r in records:
            vec = np.frombuffer(base64.b64decode(r["embedding"]), dtype=np.float32)
            new_id = r["id"] if lib._find_key(r["id"]) is None else None
            pid = lib.add_pattern(vec, r["feature"], r["duration_s"], r.get("name"), r.get("metadata"), r.get("tags", ()), new_id)
            ids[r["id"]] = pid
            key = lib._key(pid)
            for stream, start_s, end_s, score, recorded_at in r.get("occurrences", []):
                lib._write().execute(
                    "INSERT INTO occurrences(pattern_key, stream, start_s, end_s, score, recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (key, stream, start_s, end_s, score, recorded_at),
                )
        for r in records:
            for rel in r.get("relationships", []):
                if rel["src"] in ids and rel["dst"] in ids:
                    lib._write().execute(
                        "INSERT OR REPLACE INTO relationships(src_key, dst_key, kind, count, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?)",
                        (lib._key(ids[rel["src"]]), lib._key(ids[rel["dst"]]), rel["kind"], rel["count"], rel["first_seen"], rel["last_seen"]),
                    )
    lib.commit()
    return len(records)
