"""Persistent pattern library: SQLite (WAL) for patterns, occurrences, tags, relationships
and metadata, plus a vector index over pattern embeddings (``docs/library.md``).

One process writes (the live matcher); any number read (the server, the CLI), each with its
own :class:`PatternLibrary`. Writes are grouped into batches committed every
``batch_size`` operations or ``batch_interval_s`` seconds (and on :meth:`commit` /
:meth:`close`): a ``kill -9`` loses at most the uncommitted batch, and the database reopens
cleanly (WAL). A batch never ends inside an operation group (:meth:`group`; every
:meth:`file_match` and import is one), and a group that raises is undone whole: a new
pattern and its occurrences are committed together or not at all. The vector index is a cache rebuilt from SQLite when its saved copy is stale.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ostinato.runtime._closing import Closing
from ostinato.stream.library_records import Lru, Occurrence, Pattern, blob, unit
from ostinato.stream.library_schema import SCHEMA_VERSION, LibraryError, PatternNotFoundError, migrate
from ostinato.stream.vector_index import EXACT_LIMIT, FlatIndex, HnswIndex, build_index, load_persisted, save_persisted

__all__ = ["LibraryConfig", "LibraryError", "Occurrence", "Pattern", "PatternLibrary", "PatternNotFoundError", "RELATIONSHIP_KINDS"]

logger = logging.getLogger(__name__)

RELATIONSHIP_KINDS = ("variant-of", "contains", "co-occurs-with")


@dataclasses.dataclass(frozen=True, slots=True)
class LibraryConfig:
    """Pattern library settings.

    Args:
        batch_size: Writes per committed batch.
        batch_interval_s: A batch is committed at the latest this long after its first write.
        same_threshold: Cosine at or above which a new match is filed under an existing pattern.
        variant_threshold: Cosine at or above which a new pattern is recorded as a variant.
        co_occurrence_window_s: Occurrences in one stream this close are related.
        cache_size: Patterns kept in the LRU cache.
        similarity_cache_size: Memoised pattern-pair similarities.
        exact_limit: Library size up to which the vector index is an exact scan.
        persist_index: Keep the HNSW index in ``<db>.usearch`` so a new process loads it
            instead of rebuilding it from SQLite (checked against the database first).
    """

    batch_size: int = 64
    batch_interval_s: float = 1.0
    same_threshold: float = 0.9
    variant_threshold: float = 0.75
    co_occurrence_window_s: float = 30.0
    cache_size: int = 1024
    similarity_cache_size: int = 65536
    exact_limit: int = EXACT_LIMIT
    persist_index: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.batch_interval_s < 0:
            raise ValueError(f"batch_size={self.batch_size}, batch_interval_s={self.batch_interval_s}; expected >= 1, >= 0")
        if not -1.0 <= self.variant_threshold <= self.same_threshold <= 1.0:
            raise ValueError(
                f"variant_threshold={self.variant_threshold}, same_threshold={self.same_threshold}; "
                "expected -1 <= variant <= same <= 1"
            )
        if self.cache_size < 1 or self.similarity_cache_size < 1 or self.co_occurrence_window_s < 0:
            raise ValueError("cache sizes must be >= 1 and co_occurrence_window_s >= 0")


class PatternLibrary(Closing):
    """A pattern library file.

    Args:
        path: SQLite database file (created with its folder when missing, unless read-only).
        config: Library settings.
        readonly: Open for reading only (many readers may run beside one writer).

    Raises:
        LibraryError: The file is not a pattern library or cannot be opened.
        LibraryVersionError: The file was written by a newer ostinato.
    """

    def __init__(self, path: str | Path, config: LibraryConfig | None = None, readonly: bool = False) -> None:
        self.path = Path(path)
        self.config = config if config is not None else LibraryConfig()
        self.readonly = readonly
        self._lock = threading.RLock()
        self._pending = 0
        self._batch_started = 0.0
        self._group_depth = 0
        self._commit_asked = False
        self._cache = Lru(self.config.cache_size)
        self._sim_cache = Lru(self.config.similarity_cache_size)
        self._index: FlatIndex | HnswIndex | None = None
        self._index_generation = -1
        self.index_loaded = False  # whether the current index came from the persisted file
        self._db = self._connect()
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    def _connect(self) -> sqlite3.Connection:
        try:
            if self.readonly:
                if not self.path.is_file():
                    raise LibraryError(f"pattern library {str(self.path)!r} does not exist", hint="check the --library path")
                db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=10.0)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=10000")
            if not self.readonly:
                migrate(db)
            elif int(db.execute("PRAGMA user_version").fetchone()[0]) != SCHEMA_VERSION:
                raise LibraryError(
                    f"{str(self.path)!r} has schema version {db.execute('PRAGMA user_version').fetchone()[0]}; "
                    f"this reader needs {SCHEMA_VERSION}",
                    hint="open it once for writing to migrate it, or upgrade ostinato",
                )
        except sqlite3.DatabaseError as e:
            raise LibraryError(f"cannot open pattern library {str(self.path)!r}: {e}", hint="is it an ostinato library file?") from e
        return db

    def close(self) -> None:
        """Commit pending writes and close the database (idempotent)."""
        with self._lock:
            if self._closed:
                return
            if self._group_depth:
                raise LibraryError("cannot close the pattern library inside an operation group", hint="close it after the group")
            if not self.readonly:
                self.commit()
            self._db.close()
            self._closed = True

    # ------------------------------------------------------------------ transactions
    def _write(self) -> sqlite3.Connection:
        if self.readonly:
            raise LibraryError(f"pattern library {str(self.path)!r} is open read-only", hint="open it without readonly to change it")
        if self._closed:
            raise LibraryError("pattern library is closed")
        if not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")
            self._batch_started = time.monotonic()
        return self._db

    def _wrote(self, changed_vectors: bool = False) -> None:
        self._pending += 1
        if changed_vectors:
            in_sync = self._index is not None and self._index_generation == self._generation()
            self._db.execute(
                "INSERT INTO meta(key, value) VALUES ('generation', '1') ON CONFLICT(key) "
                "DO UPDATE SET value = CAST(value AS INTEGER) + 1"
            )
            if in_sync:  # this writer applied the change to its own index: no rebuild needed
                self._index_generation = self._generation()
        self._maybe_commit()

    def _maybe_commit(self) -> None:
        if self._group_depth:
            return  # never inside an operation group: the group ends the batch if it is due
        if self._pending >= self.config.batch_size or time.monotonic() - self._batch_started >= self.config.batch_interval_s:
            self.commit()

    @contextlib.contextmanager
    def group(self) -> Iterator[None]:
        """Make the writes inside the block one operation: no batch boundary falls inside it
        (after a crash all of them are in the file or none is), and if the block raises, all
        of its writes are undone (an SQLite savepoint; writes made before it stay pending).
        Groups nest; the batch is committed, if due, when the outermost one ends; a
        :meth:`commit` asked for inside a group happens then. The writer's lock is held for
        the block.

        Raises:
            LibraryError: The library is read-only or closed.
        """
        with self._lock:
            depth, pending = self._group_depth, self._pending
            self._write().execute(f"SAVEPOINT group_{depth}")
            self._group_depth += 1
            try:
                yield
            except BaseException:
                self._undo_group(depth, pending)
                raise
            else:
                self._db.execute(f"RELEASE group_{depth}")
            finally:
                self._group_depth -= 1
            if not self._group_depth:
                if self._commit_asked or not self._pending:
                    self.commit()  # also ends the empty transaction of a group that wrote nothing
                else:
                    self._maybe_commit()

    def _undo_group(self, depth: int, pending: int) -> None:
        try:
            self._db.execute(f"ROLLBACK TO group_{depth}")
            self._db.execute(f"RELEASE group_{depth}")
            self._pending = pending
        except sqlite3.Error as e:  # SQLite already rolled the whole transaction back (disk full, I/O)
            logger.warning("pattern library %s: the open batch was rolled back (%s)", self.path, e)
            self._pending = 0
        self._forget_memory()
        if not depth and not self._pending and self._db.in_transaction:
            self._db.execute("COMMIT")  # nothing left in it: release the write lock

    def _forget_memory(self) -> None:
        """After a rollback: what this object holds in memory may describe undone writes."""
        self._index, self._index_generation = None, -1
        self._cache.clear()
        self._sim_cache.clear()

    def commit(self) -> None:
        """Commit the current batch (no-op when nothing is pending; inside a :meth:`group`,
        when the outermost group ends)."""
        with self._lock:
            if self._group_depth:
                self._commit_asked = True
                return
            if not self._closed and self._db.in_transaction:
                self._db.execute("COMMIT")
            self._pending = 0
            self._commit_asked = False

    @property
    def pending(self) -> int:
        """Writes not yet committed."""
        return self._pending

    def _generation(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------ meta
    def feature_space(self) -> dict[str, Any] | None:
        """The feature space patterns were embedded in (``{"feature", "dim", ...}``), or None."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'feature_space'").fetchone()
        return json.loads(row[0]) if row else None

    def _check_space(self, feature: str, dim: int) -> None:
        space = self.feature_space()
        if space is None:
            self._write().execute(
                "INSERT INTO meta(key, value) VALUES ('feature_space', ?)", (json.dumps({"feature": feature, "dim": dim}),)
            )
        elif space["feature"] != feature or int(space["dim"]) != dim:
            same_kind = str(space["feature"]).split("/")[0] == feature.split("/")[0]
            raise LibraryError(
                f"pattern of feature {feature!r} (dim {dim}) does not fit this library "
                f"({space['feature']!r}, dim {space['dim']})",
                hint=("this library was filled by another version of that feature (ostinato's log-mel patterns "
                      "went from 39 to 78 dims with the noise-robust frames); start a new library file"
                      if same_kind else "use one library per feature kind (--features / --model must match)"),
            )

    # ------------------------------------------------------------------ writes
    def add_pattern(
        self,
        embedding: npt.NDArray[np.floating],
        feature: str,
        duration_s: float,
        name: str | None = None,
        metadata: dict[str, Any] | None = None,
        tags: Iterable[str] = (),
        pattern_id: str | None = None,
    ) -> str:
        """Store a new pattern; returns its id.

        Raises:
            LibraryError: Bad embedding, feature space mismatch or a duplicate id.
        """
        vec = unit(embedding)
        now = time.time()
        with self._lock:
            self._check_space(feature, vec.size)
            pid = pattern_id or f"pat-{uuid.uuid4().hex[:12]}"
            try:
                cur = self._write().execute(
                    "INSERT INTO patterns(id, name, feature, dim, embedding, duration_s, created_at, updated_at, metadata) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (pid, name, feature, vec.size, blob(vec), float(duration_s), now, now, json.dumps(metadata or {})),
                )
            except sqlite3.IntegrityError as e:
                raise LibraryError(f"pattern id {pid!r} already exists") from e
            key = int(cur.lastrowid or 0)
            for tag in tags:
                self._db.execute("INSERT OR IGNORE INTO tags(pattern_key, tag) VALUES (?, ?)", (key, str(tag)))
            if self._index is not None:
                self._index.add(np.array([key]), vec[None, :])
            self._wrote(changed_vectors=True)
            return pid

    def record_occurrence(
        self, pattern_id: str, stream: str, start_s: float, end_s: float, score: float, recorded_at: float | None = None
    ) -> None:
        """Store one occurrence and update co-occurrence / containment relationships."""
        with self._lock:
            key = self._key(pattern_id)
            when = time.time() if recorded_at is None else float(recorded_at)
            db = self._write()
            window = self.config.co_occurrence_window_s
            near = db.execute(
                "SELECT pattern_key, start_s, end_s FROM occurrences WHERE stream = ? AND pattern_key != ? "
                "AND end_s >= ? AND start_s <= ?",
                (stream, key, start_s - window, end_s + window),
            ).fetchall()
            db.execute(
                "INSERT INTO occurrences(pattern_key, stream, start_s, end_s, score, recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
                (key, stream, float(start_s), float(end_s), float(score), when),
            )
            db.execute("UPDATE patterns SET updated_at = ? WHERE key = ?", (when, key))
            for other, o_start, o_end in {(r[0], r[1], r[2]) for r in near}:
                if start_s <= o_start and o_end <= end_s:
                    self._relate(key, other, "contains", when)
                elif o_start <= start_s and end_s <= o_end:
                    self._relate(other, key, "contains", when)
                self._relate(min(key, other), max(key, other), "co-occurs-with", when)
            self._cache.pop(key, None)
            self._wrote()

    def _relate(self, src: int, dst: int, kind: str, when: float) -> None:
        self._db.execute(
            "INSERT INTO relationships(src_key, dst_key, kind, count, first_seen, last_seen) VALUES (?, ?, ?, 1, ?, ?) "
            "ON CONFLICT(src_key, dst_key, kind) DO UPDATE SET count = count + 1, last_seen = excluded.last_seen",
            (src, dst, kind, when, when),
        )

    def relate(self, src_id: str, dst_id: str, kind: str) -> None:
        """Record (or count again) a relationship ``src kind dst``.

        Raises:
            LibraryError: Unknown ids or kind.
        """
        if kind not in RELATIONSHIP_KINDS:
            raise LibraryError(f"relationship kind {kind!r}; expected one of {RELATIONSHIP_KINDS}")
        with self._lock:
            self._write()
            self._relate(self._key(src_id), self._key(dst_id), kind, time.time())
            self._wrote()

    def file_match(
        self,
        embedding: npt.NDArray[np.floating],
        feature: str,
        duration_s: float,
        stream: str,
        occurrences: Iterable[tuple[float, float, float]],
        pattern_id: str | None = None,
    ) -> str:
        """File a live match: reuse ``pattern_id`` if given and known, else the nearest
        pattern at or above ``same_threshold``, else a new pattern (``variant-of`` the
        nearest one at or above ``variant_threshold``); then record ``occurrences``
        (``(start_s, end_s, score)`` in ``stream``). One operation group (:meth:`group`): the
        pattern and its occurrences land in the same batch. Returns the pattern id."""
        vec = unit(embedding)
        with self.group():
            if pattern_id is not None and self._find_key(pattern_id) is not None:
                pid = pattern_id
            else:
                best = self.query_vector(vec, 1)
                if best and best[0][1] >= self.config.same_threshold:
                    pid = best[0][0].id
                else:
                    pid = self.add_pattern(vec, feature, duration_s)
                    if best and best[0][1] >= self.config.variant_threshold:
                        self._relate(self._key(pid), best[0][0].key, "variant-of", time.time())
            for start_s, end_s, score in occurrences:
                self.record_occurrence(pid, stream, start_s, end_s, score)
            return pid

    def tag(self, pattern_id: str, *tags: str, remove: bool = False) -> None:
        """Add (or remove) tags."""
        with self._lock:
            key = self._key(pattern_id)
            db = self._write()
            for tag in tags:
                if remove:
                    db.execute("DELETE FROM tags WHERE pattern_key = ? AND tag = ?", (key, tag))
                else:
                    db.execute("INSERT OR IGNORE INTO tags(pattern_key, tag) VALUES (?, ?)", (key, tag))
            db.execute("UPDATE patterns SET updated_at = ? WHERE key = ?", (time.time(), key))
            self._cache.pop(key, None)
            self._wrote()

    def rename(self, pattern_id: str, name: str | None) -> None:
        """Set (or clear) a pattern's name."""
        self._update(pattern_id, "name = ?", (name,))

    def set_metadata(self, pattern_id: str, metadata: dict[str, Any]) -> None:
        """Replace a pattern's free JSON metadata."""
        self._update(pattern_id, "metadata = ?", (json.dumps(metadata),))

    def _update(self, pattern_id: str, assignment: str, values: tuple[Any, ...]) -> None:
        with self._lock:
            key = self._key(pattern_id)
            self._write().execute(f"UPDATE patterns SET {assignment}, updated_at = ? WHERE key = ?", (*values, time.time(), key))
            self._cache.pop(key, None)
            self._wrote()

    def merge(self, into_id: str, *from_ids: str) -> None:
        """Merge patterns into ``into_id``: occurrences, tags and relationships move over,
        the embedding becomes the occurrence-weighted mean, and the old ids stay resolvable."""
        from ostinato.stream.library_ops import merge_patterns

        with self.group():  # one operation: all of it or, if it fails, none
            merge_patterns(self, into_id, from_ids)

    def delete(self, pattern_id: str) -> None:
        """Delete a pattern with its occurrences, tags and relationships."""
        with self._lock:
            key = self._key(pattern_id)
            self._write().execute("DELETE FROM patterns WHERE key = ?", (key,))
            if self._index is not None:
                self._index.remove(np.array([key]))
            self._cache.pop(key, None)
            self._wrote(changed_vectors=True)

    # ------------------------------------------------------------------ reads
    def _find_key(self, pattern_id: str) -> int | None:
        row = self._db.execute("SELECT key FROM patterns WHERE id = ?", (pattern_id,)).fetchone()
        if row is None:
            row = self._db.execute("SELECT new_key FROM aliases WHERE old_id = ?", (pattern_id,)).fetchone()
        return int(row[0]) if row else None

    def _key(self, pattern_id: str) -> int:
        key = self._find_key(pattern_id)
        if key is None:
            raise PatternNotFoundError(f"no pattern with id {pattern_id!r} in {str(self.path)!r}")
        return key

    def get(self, pattern_id: str) -> Pattern:
        """One pattern by id (merged-away ids resolve to the surviving pattern).

        Raises:
            LibraryError: Unknown id.
        """
        with self._lock:
            return self._load(self._key(pattern_id))

    def _load(self, key: int) -> Pattern:
        cached = self._cache.lookup(key)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        row = self._db.execute(
            "SELECT p.id, p.name, p.feature, p.embedding, p.duration_s, p.created_at, p.updated_at, p.metadata, "
            "(SELECT COUNT(*) FROM occurrences o WHERE o.pattern_key = p.key), "
            "(SELECT MIN(recorded_at) FROM occurrences o WHERE o.pattern_key = p.key), "
            "(SELECT MAX(recorded_at) FROM occurrences o WHERE o.pattern_key = p.key) FROM patterns p WHERE p.key = ?",
            (key,),
        ).fetchone()
        if row is None:
            raise LibraryError(f"pattern key {key} vanished (deleted by another writer?)")
        tags = tuple(r[0] for r in self._db.execute("SELECT tag FROM tags WHERE pattern_key = ? ORDER BY tag", (key,)))
        pattern = Pattern(
            id=row[0], key=key, name=row[1], feature=row[2], embedding=np.frombuffer(row[3], dtype=np.float32).copy(),
            duration_s=row[4], created_at=row[5], updated_at=row[6], metadata=json.loads(row[7]), tags=tags,
            occurrence_count=int(row[8]), first_seen=row[9], last_seen=row[10],
        )
        self._cache.store(key, pattern)
        return pattern

    def list(
        self,
        tag: str | None = None,
        stream: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
    ) -> builtins.list[Pattern]:
        """Patterns filtered by tag, by stream and by wall-clock time of their occurrences
        (``since``/``until`` as Unix seconds), most recently updated first."""
        clauses: builtins.list[str] = []
        params: builtins.list[Any] = []
        if tag is not None:
            clauses.append("p.key IN (SELECT pattern_key FROM tags WHERE tag = ?)")
            params.append(tag)
        if stream is not None or since is not None or until is not None:
            sub = ["1 = 1"]
            if stream is not None:
                sub.append("stream = ?")
                params.append(stream)
            if since is not None:
                sub.append("recorded_at >= ?")
                params.append(since)
            if until is not None:
                sub.append("recorded_at <= ?")
                params.append(until)
            clauses.append(f"p.key IN (SELECT pattern_key FROM occurrences WHERE {' AND '.join(sub)})")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            keys = [r[0] for r in self._db.execute(f"SELECT p.key FROM patterns p {where} ORDER BY p.updated_at DESC, p.key DESC LIMIT ?", (*params, int(limit)))]
            return [self._load(k) for k in keys]

    def count(self) -> int:
        """Number of patterns."""
        return int(self._db.execute("SELECT COUNT(*) FROM patterns").fetchone()[0])

    def occurrences(self, pattern_id: str, limit: int = 1000) -> builtins.list[Occurrence]:
        """Occurrences of a pattern, oldest first."""
        with self._lock:
            key = self._key(pattern_id)
            pid = self._load(key).id
            rows = self._db.execute(
                "SELECT stream, start_s, end_s, score, recorded_at FROM occurrences WHERE pattern_key = ? ORDER BY recorded_at, id LIMIT ?",
                (key, int(limit)),
            ).fetchall()
        return [Occurrence(pid, *r) for r in rows]

    def relationships(self, pattern_id: str) -> builtins.list[dict[str, Any]]:
        """Relationships involving a pattern: ``{"src", "dst", "kind", "count", "first_seen", "last_seen"}``."""
        with self._lock:
            key = self._key(pattern_id)
            rows = self._db.execute(
                "SELECT s.id, d.id, r.kind, r.count, r.first_seen, r.last_seen FROM relationships r "
                "JOIN patterns s ON s.key = r.src_key JOIN patterns d ON d.key = r.dst_key "
                "WHERE r.src_key = ? OR r.dst_key = ? ORDER BY r.last_seen DESC",
                (key, key),
            ).fetchall()
        names = ("src", "dst", "kind", "count", "first_seen", "last_seen")
        return [dict(zip(names, r, strict=True)) for r in rows]

    def _ensure_index(self) -> FlatIndex | HnswIndex:
        generation = self._generation()
        if self._index is not None and generation == self._index_generation:
            return self._index
        space = self.feature_space()
        dim = int(space["dim"]) if space else 1
        count, max_key, key_sum = self._db.execute(
            "SELECT COUNT(*), COALESCE(MAX(key), 0), COALESCE(SUM(key), 0) FROM patterns"
        ).fetchone()
        stamp = {"count": int(count), "max_key": int(max_key), "key_sum": int(key_sum), "generation": generation, "dim": dim}
        persisted = self.index_path if self.config.persist_index and count > self.config.exact_limit else None
        self._index = load_persisted(persisted, dim, stamp) if persisted is not None and persisted.exists() else None
        self.index_loaded = self._index is not None
        if self._index is None:
            rows = self._db.execute("SELECT key, embedding FROM patterns ORDER BY key").fetchall()
            keys = np.array([r[0] for r in rows], dtype=np.int64)
            vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim) if rows else np.zeros((0, dim), np.float32)
            self._index = build_index(dim, keys, vectors, self.config.exact_limit)
            if persisted is not None and isinstance(self._index, HnswIndex):
                save_persisted(self._index, persisted, stamp)
        self._index_generation = generation
        self._sim_cache.clear()
        return self._index

    @property
    def index_path(self) -> Path:
        """Where the HNSW index is persisted (``<db>.usearch``, stamp in ``<db>.usearch.json``)."""
        return self.path.with_name(self.path.name + ".usearch")

    def query_vector(self, embedding: npt.NDArray[np.floating], k: int = 10) -> builtins.list[tuple[Pattern, float]]:
        """The ``k`` patterns most similar to ``embedding`` with their cosine similarity."""
        vec = unit(embedding)
        with self._lock:
            space = self.feature_space()
            if space is None:
                return []
            if int(space["dim"]) != vec.size:
                raise LibraryError(
                    f"query embedding has dim {vec.size}; the library holds {space['feature']!r} patterns of dim {space['dim']}",
                    hint="query with the same feature kind the library was built with",
                )
            keys, scores = self._ensure_index().search(vec, k)
            return [(self._load(int(key)), float(score)) for key, score in zip(keys, scores, strict=True)]

    def similarity(self, id_a: str, id_b: str) -> float:
        """Cosine similarity of two patterns (memoised until the embeddings change)."""
        with self._lock:
            self._ensure_index()
            a, b = sorted((self._key(id_a), self._key(id_b)))
            cached = self._sim_cache.lookup((a, b))
            if cached is None:
                cached = float(self._load(a).embedding @ self._load(b).embedding)
                self._sim_cache.store((a, b), cached)
            return float(cached)

    def cache_stats(self) -> dict[str, int]:
        """Hit/miss counts of the pattern and similarity caches."""
        return {
            "pattern_hits": self._cache.hits, "pattern_misses": self._cache.misses,
            "similarity_hits": self._sim_cache.hits, "similarity_misses": self._sim_cache.misses,
        }

    @property
    def index_kind(self) -> str:
        """``flat`` or ``hnsw`` (after the first query)."""
        return "hnsw" if isinstance(self._index, HnswIndex) else "flat"

    # ------------------------------------------------------------------ export / import
    def export_json(self, path: str | Path) -> int:
        """Write every pattern (embedding as base64 float32), its tags, occurrences and
        relationships to a JSON-lines file; returns the number of patterns."""
        from ostinato.stream.library_ops import export_patterns

        with self._lock:
            return int(export_patterns(self, Path(path)))

    def import_json(self, path: str | Path) -> int:
        """Add the patterns of an export; ids already present get new ids. Returns count."""
        from ostinato.stream.library_ops import import_patterns

        with self._lock:
            return int(import_patterns(self, Path(path)))

