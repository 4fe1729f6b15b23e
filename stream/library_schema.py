"""SQLite schema of the pattern library and its migrations.

The schema version lives in ``PRAGMA user_version``. :func:`migrate` applies, in one
transaction each, every migration above the file's version; a file written by a newer
ostinato (version above :data:`SCHEMA_VERSION`) is refused rather than guessed at.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from ostinato.stream.errors import ErrorClass, StreamError

__all__ = ["SCHEMA_VERSION", "LibraryError", "LibraryVersionError", "PatternNotFoundError", "migrate", "schema_version"]


class LibraryError(StreamError, RuntimeError):
    """The pattern library cannot do what was asked (bad id, wrong feature space, ...)."""

    error_class = ErrorClass.INPUT
    default_hint = "check the pattern id with `ostinato library list`"


class PatternNotFoundError(LibraryError, LookupError):
    """No pattern has that id (nor was it merged into one that does)."""


class LibraryVersionError(LibraryError):
    """The database was written by a newer ostinato."""

    error_class = ErrorClass.PERMANENT
    default_hint = "upgrade ostinato, or open a copy made with `ostinato library export`"


def _run(db: sqlite3.Connection, script: str) -> None:
    # Not executescript(): it commits first, and a migration must be one transaction.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _v1(db: sqlite3.Connection) -> None:
    """Patterns, occurrences, tags, key/value metadata."""
    _run(
        db,
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE patterns (
            key INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            name TEXT,
            feature TEXT NOT NULL,
            dim INTEGER NOT NULL,
            embedding BLOB NOT NULL,
            duration_s REAL NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            metadata TEXT NOT NULL DEFAULT '{}'
        );
        CREATE TABLE occurrences (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            pattern_key INTEGER NOT NULL REFERENCES patterns(key) ON DELETE CASCADE,
            stream TEXT NOT NULL,
            start_s REAL NOT NULL,
            end_s REAL NOT NULL,
            score REAL NOT NULL,
            recorded_at REAL NOT NULL
        );
        CREATE TABLE tags (
            pattern_key INTEGER NOT NULL REFERENCES patterns(key) ON DELETE CASCADE,
            tag TEXT NOT NULL,
            PRIMARY KEY (pattern_key, tag)
        );
        """,
    )


def _v2(db: sqlite3.Connection) -> None:
    """Relationships between patterns, ids kept after merges, lookup indexes."""
    _run(
        db,
        """
        CREATE TABLE relationships (
            src_key INTEGER NOT NULL REFERENCES patterns(key) ON DELETE CASCADE,
            dst_key INTEGER NOT NULL REFERENCES patterns(key) ON DELETE CASCADE,
            kind TEXT NOT NULL CHECK (kind IN ('variant-of', 'contains', 'co-occurs-with')),
            count INTEGER NOT NULL DEFAULT 1,
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL,
            PRIMARY KEY (src_key, dst_key, kind)
        );
        CREATE TABLE aliases (
            old_id TEXT PRIMARY KEY,
            new_key INTEGER NOT NULL REFERENCES patterns(key) ON DELETE CASCADE
        );
        CREATE INDEX occurrences_by_pattern ON occurrences(pattern_key, recorded_at);
        CREATE INDEX occurrences_by_stream ON occurrences(stream, recorded_at);
        CREATE INDEX tags_by_tag ON tags(tag);
        """,
    )


MIGRATIONS: tuple[tuple[int, Callable[[sqlite3.Connection], None]], ...] = ((1, _v1), (2, _v2))
SCHEMA_VERSION = MIGRATIONS[-1][0]


def schema_version(db: sqlite3.Connection) -> int:
    """The file's schema version (0 for an empty database)."""
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Bring ``db`` (autocommit connection) to ``target``; returns the version reached.

    Raises:
        LibraryVersionError: The file is newer than this code understands.
    """
    current = schema_version(db)
    if current > SCHEMA_VERSION:
        raise LibraryVersionError(f"library schema version {current} is newer than supported ({SCHEMA_VERSION})")
    for version, step in MIGRATIONS:
        if current < version <= target:
            db.execute("BEGIN IMMEDIATE")
            try:
                step(db)
                db.execute(f"PRAGMA user_version = {version}")
                db.execute("COMMIT")
            except Exception:
                db.execute("ROLLBACK")
                raise
            current = version
    return current
