"""PatternLibrary: round trips, queries, merges, migrations, crash safety, concurrent readers."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ostinato.stream.library import LibraryConfig, LibraryError, PatternLibrary, PatternNotFoundError
from ostinato.stream.library_schema import SCHEMA_VERSION, LibraryVersionError, migrate

DIM = 16


def _vec(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def test_round_trip_tags_names_metadata_and_queries(tmp_path: Path) -> None:
    path = tmp_path / "lib.db"
    with PatternLibrary(path) as lib:
        a = lib.add_pattern(_vec(1), "logmel/d8", 2.0, name="jingle", metadata={"src": "radio"}, tags=["ad"])
        b = lib.add_pattern(_vec(2), "logmel/d8", 3.0)
        lib.record_occurrence(a, "radio", 10.0, 12.0, 0.9, recorded_at=1000.0)
        lib.record_occurrence(b, "radio", 10.5, 11.5, 0.8, recorded_at=1001.0)  # inside a
        lib.record_occurrence(b, "tv", 1.0, 4.0, 0.7, recorded_at=2000.0)
        lib.tag(b, "speech", "news")
        lib.tag(b, "news", remove=True)
        lib.rename(b, "anchor")
        lib.set_metadata(b, {"lang": "en"})
    with PatternLibrary(path, readonly=True) as lib:
        pa, pb = lib.get(a), lib.get(b)
        assert (pa.name, pa.tags, pa.metadata, pa.duration_s) == ("jingle", ("ad",), {"src": "radio"}, 2.0)
        assert (pb.name, pb.tags, pb.metadata, pb.occurrence_count) == ("anchor", ("speech",), {"lang": "en"}, 2)
        assert (pb.first_seen, pb.last_seen) == (1001.0, 2000.0)
        np.testing.assert_allclose(pa.embedding, _vec(1) / np.linalg.norm(_vec(1)), rtol=1e-6)
        assert [p.id for p in lib.list(tag="ad")] == [a]
        assert {p.id for p in lib.list(stream="radio")} == {a, b} and [p.id for p in lib.list(stream="tv")] == [b]
        assert [p.id for p in lib.list(since=1500.0)] == [b] and [p.id for p in lib.list(until=1000.5)] == [a]
        kinds = {(r["src"], r["kind"], r["dst"]) for r in lib.relationships(a)}
        assert (a, "contains", b) in kinds and ((a, "co-occurs-with", b) in kinds or (b, "co-occurs-with", a) in kinds)
        hits = lib.query_vector(_vec(2) + 0.05 * _vec(3), 2)
        assert hits[0][0].id == b and hits[0][1] > 0.95 and hits[1][1] < hits[0][1]
        assert lib.similarity(a, b) == lib.similarity(b, a)
        assert lib.cache_stats()["similarity_hits"] >= 1
        with pytest.raises(LibraryError, match="read-only"):
            lib.tag(a, "x")
        with pytest.raises(PatternNotFoundError, match="no pattern"):  # a LibraryError and a LookupError
            lib.get("pat-missing")


def test_merge_delete_export_import(tmp_path: Path) -> None:
    with PatternLibrary(tmp_path / "a.db") as lib:
        ids = [lib.add_pattern(_vec(i), "logmel/d8", 1.5 + i, tags=[f"t{i}"]) for i in range(4)]
        for i, pid in enumerate(ids):
            lib.record_occurrence(pid, "s", 10.0 * i, 10.0 * i + 2, 0.9)
        lib.relate(ids[2], ids[3], "variant-of")
        lib.merge(ids[0], ids[1], ids[2])
        merged = lib.get(ids[0])
        assert merged.occurrence_count == 3 and set(merged.tags) == {"t0", "t1", "t2"}
        assert lib.get(ids[1]).id == ids[0]  # merged-away ids still resolve
        assert any(r["kind"] == "variant-of" and r["dst"] == ids[3] for r in lib.relationships(ids[0]))
        assert lib.count() == 2
        lib.delete(ids[3])
        assert lib.count() == 1 and lib.query_vector(_vec(3), 5)[0][0].id == ids[0]
        with pytest.raises(LibraryError, match="itself"):
            lib.merge(ids[0], ids[0])
        assert lib.export_json(tmp_path / "x.jsonl") == 1
    with PatternLibrary(tmp_path / "b.db") as other:
        other.add_pattern(_vec(9), "logmel/d8", 1.0, pattern_id=ids[0])  # id collision on import
        assert other.import_json(tmp_path / "x.jsonl") == 1
        imported = [p for p in other.list() if p.id != ids[0]]
        assert len(imported) == 1 and imported[0].occurrence_count == 3 and set(imported[0].tags) == {"t0", "t1", "t2"}
    header = json.loads((tmp_path / "x.jsonl").read_text().splitlines()[0])
    assert header["format"] == "ostinato-pattern-library/1"


def test_feature_space_and_bad_embeddings_are_checked(tmp_path: Path) -> None:
    with PatternLibrary(tmp_path / "l.db") as lib:
        lib.add_pattern(_vec(1), "logmel/d8", 1.0)
        with pytest.raises(LibraryError, match="does not fit"):
            lib.add_pattern(np.ones(DIM + 1), "logmel/d8", 1.0)
        with pytest.raises(LibraryError, match="does not fit"):
            lib.add_pattern(_vec(2), "wav2vec2/d128", 1.0)
        with pytest.raises(LibraryError, match="zeros"):
            lib.add_pattern(np.zeros(DIM), "logmel/d8", 1.0)
        with pytest.raises(LibraryError, match="dim"):
            lib.query_vector(np.ones(DIM + 3))
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(LibraryError, match="cannot open"):
        PatternLibrary(tmp_path / "junk.db")


def test_file_match_reuses_patterns_and_records_variants(tmp_path: Path) -> None:
    with PatternLibrary(tmp_path / "l.db", LibraryConfig(same_threshold=0.9, variant_threshold=0.6)) as lib:
        first = lib.file_match(_vec(1), "f/d8", 2.0, "s", [(1.0, 3.0, 1.0), (10.0, 12.0, 0.9)])
        again = lib.file_match(_vec(1) + 0.01 * _vec(2), "f/d8", 2.0, "s", [(20.0, 22.0, 0.9)])
        assert again == first and lib.get(first).occurrence_count == 3
        u = _vec(1) / np.linalg.norm(_vec(1))
        w = _vec(5) - (_vec(5) @ u) * u
        variant = lib.file_match(u + w / np.linalg.norm(w), "f/d8", 2.0, "s", [(30.0, 32.0, 0.8)])  # cosine 0.707
        assert variant != first
        assert any(r["kind"] == "variant-of" and r["src"] == variant for r in lib.relationships(first))
        assert lib.file_match(_vec(7), "f/d8", 1.0, "s", [(40.0, 41.0, 0.7)], pattern_id=first) == first


def test_hnsw_index_is_used_above_the_exact_limit(tmp_path: Path) -> None:
    pytest.importorskip("usearch")
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((300, DIM)).astype(np.float32)
    with PatternLibrary(tmp_path / "l.db", LibraryConfig(exact_limit=100, batch_size=1000)) as lib:
        ids = [lib.add_pattern(v, "f/d8", 1.0) for v in vectors]
        found = lib.query_vector(vectors[123], 3)
        assert lib.index_kind == "hnsw" and found[0][0].id == ids[123] and found[0][1] == pytest.approx(1.0, abs=1e-4)
        new = lib.add_pattern(vectors[5] * -1, "f/d8", 1.0)  # added to the live index
        assert lib.query_vector(-vectors[5], 1)[0][0].id == new


def test_hnsw_index_is_persisted_beside_the_db_and_rebuilt_when_stale(tmp_path: Path) -> None:
    pytest.importorskip("usearch")
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((300, DIM)).astype(np.float32)
    path, config = tmp_path / "l.db", LibraryConfig(exact_limit=100, batch_size=1000)
    with PatternLibrary(path, config) as lib:
        ids = [lib.add_pattern(v, "f/d8", 1.0) for v in vectors]
    with PatternLibrary(path, config, readonly=True) as lib:  # first query builds and persists
        assert lib.query_vector(vectors[7], 1)[0][0].id == ids[7]
        assert lib.index_kind == "hnsw" and not lib.index_loaded
        assert lib.index_path.is_file() and lib.index_path.with_name("l.db.usearch.json").is_file()
    with PatternLibrary(path, config, readonly=True) as lib:  # a new process loads it
        found = lib.query_vector(vectors[42], 3)
        assert lib.index_loaded and found[0][0].id == ids[42] and found[0][1] == pytest.approx(1.0, abs=1e-4)
    with PatternLibrary(path, config) as lib:  # the database moves on: the file is stale
        new = lib.add_pattern(-vectors[3], "f/d8", 1.0)
        lib.delete(ids[9])
    with PatternLibrary(path, config, readonly=True) as lib:
        assert lib.query_vector(-vectors[3], 1)[0][0].id == new
        assert not lib.index_loaded
        assert all(p.id != ids[9] for p, _ in lib.query_vector(vectors[9], 5))
    with PatternLibrary(path, config, readonly=True) as lib:  # rebuilt and persisted again
        lib.query_vector(vectors[0], 1)
        assert lib.index_loaded
    lib.index_path.write_bytes(b"not an index")  # a damaged file is rebuilt, nothing fails
    with PatternLibrary(path, config, readonly=True) as lib:
        assert lib.query_vector(vectors[11], 1)[0][0].id == ids[11] and not lib.index_loaded
    with PatternLibrary(path, LibraryConfig(exact_limit=100, persist_index=False), readonly=True) as lib:
        lib.query_vector(vectors[0], 1)
        assert not lib.index_loaded


def test_migration_from_v1_keeps_data_and_newer_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    assert migrate(db, target=1) == 1
    db.execute("INSERT INTO patterns(id, name, feature, dim, embedding, duration_s, created_at, updated_at) "
               "VALUES ('pat-old', 'legacy', 'f/d8', ?, ?, 1.0, 1.0, 1.0)", (DIM, (_vec(1) / np.linalg.norm(_vec(1))).tobytes()))
    db.execute("INSERT INTO meta(key, value) VALUES ('feature_space', ?)", (json.dumps({"feature": "f/d8", "dim": DIM}),))
    db.execute("INSERT INTO occurrences(pattern_key, stream, start_s, end_s, score, recorded_at) VALUES (1, 's', 0, 1, 0.5, 5.0)")
    db.close()
    with PatternLibrary(path) as lib:
        assert lib.get("pat-old").name == "legacy" and lib.get("pat-old").occurrence_count == 1
        other = lib.add_pattern(_vec(2), "f/d8", 1.0)
        lib.relate("pat-old", other, "co-occurs-with")  # v2 table
    db = sqlite3.connect(path, isolation_level=None)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(LibraryVersionError, match="newer"):
        PatternLibrary(path)


_WRITER = """
import sys, numpy as np
from ostinato.stream.library import LibraryConfig, PatternLibrary
lib = PatternLibrary(sys.argv[1], LibraryConfig(batch_size=25, batch_interval_s=1e9))
rng = np.random.default_rng(0)
i = 0
while True:
    # what the live matcher does: a new pattern, its first occurrence and the repeat (3 writes)
    lib.file_match(rng.standard_normal(64), "f/d64", 1.0, "s", [(i, i + 1.0, 1.0), (i + 0.5, i + 1.5, 0.5)])
    i += 1
    if lib.pending == 0:
        print(i, flush=True)
"""


def test_kill_9_during_writes_loses_at_most_the_open_batch(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    committed = 0
    deadline = time.monotonic() + 60
    while committed < 200 and time.monotonic() < deadline:
        committed = int(proc.stdout.readline())
    time.sleep(0.2)  # let the kill land at any write, not just after a commit
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    committed = max([committed, *(int(line) for line in proc.stdout.read().split())])
    proc.stdout.close()
    assert committed >= 200
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    with PatternLibrary(path) as lib:
        count = lib.count()
        assert committed <= count <= committed + 9  # batches of 25 writes, 3 per filed match
        # A batch never ends inside a filed match: every pattern has both of its occurrences.
        patterns = lib.list(limit=count + 1)
        assert len(patterns) == count and [p.occurrence_count for p in patterns] == [2] * count
        assert len(lib.occurrences(patterns[0].id)) == 2  # the newest
        lib.add_pattern(np.ones(64), "f/d64", 1.0)  # writable again


def test_no_batch_ends_inside_an_operation_group(tmp_path: Path) -> None:
    path = tmp_path / "g.db"
    with PatternLibrary(path, LibraryConfig(batch_size=2, batch_interval_s=0.0)) as lib, \
            PatternLibrary(path, readonly=True) as reader:
        assert reader.count() == 0
        with lib.group():
            with lib.group():  # groups nest; only the outermost ends the batch
                ids = [lib.add_pattern(_vec(i), "f/d8", 1.0) for i in range(3)]
            lib.record_occurrence(ids[0], "s", 0.0, 1.0, 0.5)
            assert lib.pending == 4 and reader.count() == 0  # due twice over, still open
            with pytest.raises(LibraryError, match="already exists"):
                lib.add_pattern(_vec(9), "f/d8", 1.0, pattern_id=ids[1])  # undoes only itself
        assert lib.pending == 0 and reader.count() == 3
        assert reader.get(ids[0]).occurrence_count == 1
        lib.add_pattern(_vec(5), "f/d8", 1.0)  # outside a group a due batch commits at once
        assert lib.pending == 0 and reader.count() == 4


def test_readers_see_a_consistent_library_while_one_writer_appends(tmp_path: Path) -> None:
    path = tmp_path / "live.db"
    with PatternLibrary(path) as lib:
        lib.add_pattern(_vec(0), "f/d8", 1.0)
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with PatternLibrary(path, LibraryConfig(batch_size=10)) as w:
                for i in range(1, 400):
                    pid = w.add_pattern(_vec(i), "f/d8", 1.0)
                    w.record_occurrence(pid, "s", i, i + 1, 0.5)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)
        finally:
            stop.set()

    writer = threading.Thread(target=write)
    writer.start()
    seen = []
    with PatternLibrary(path, readonly=True) as reader:
        while not stop.is_set() or len(seen) < 3:
            n = reader.count()
            seen.append(n)
            hits = reader.query_vector(_vec(1), 3)
            assert hits and all(p.id for p, _ in hits)
            for p in reader.list(limit=5):
                assert p.occurrence_count in (0, 1)
            if stop.is_set():
                break
    writer.join(timeout=60)
    assert not errors
    assert seen == sorted(seen) and seen[-1] >= seen[0]
    with PatternLibrary(path, readonly=True) as reader:
        assert reader.count() == 400 and reader.query_vector(_vec(399), 1)[0][1] == pytest.approx(1.0, abs=1e-5)


def test_writer_updates_its_index_in_place(tmp_path: Path) -> None:
    with PatternLibrary(tmp_path / "l.db") as lib:
        lib.add_pattern(_vec(1), "f/d8", 1.0)
        lib.query_vector(_vec(1), 1)
        index = lib._index
        new = lib.add_pattern(_vec(5), "f/d8", 1.0)
        assert lib.query_vector(_vec(5), 1)[0][0].id == new
        lib.delete(new)
        assert lib.query_vector(_vec(5), 1)[0][0].id != new
        assert lib._index is index  # no rebuild from SQLite after its own writes


def test_feature_space_mismatch_names_the_fix(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    with PatternLibrary(tmp_path / "old.db") as lib:
        lib.add_pattern(rng.standard_normal(39), "logmel/d39", 2.0)
        with pytest.raises(LibraryError, match="does not fit") as same_kind:  # an older log-mel representation
            lib.add_pattern(rng.standard_normal(78), "logmel/d78", 2.0)
        with pytest.raises(LibraryError, match="does not fit") as other_kind:
            lib.add_pattern(rng.standard_normal(768), "wav2vec2/hidden_state_12", 2.0)
    assert "start a new library file" in same_kind.value.hint
    assert "one library per feature kind" in other_kind.value.hint


def test_query_embedding_embeds_in_the_library_space_or_names_the_mismatch(speech_like) -> None:  # type: ignore[no-untyped-def]
    from ostinato.runtime.logmel import LogMel
    from ostinato.stream.embedding import FeatureSpaceMismatch, clip_embedding, query_embedding
    from ostinato.stream.matcher_config import MatcherConfig

    lm = LogMel().compute(speech_like(3.0, seed=1))
    frames = lm.features.frames
    space = f"logmel/d{MatcherConfig.for_features('logmel').frame_normalizer(frames.shape[1]).dim}"
    vector = query_embedding(frames, lm.energy_db, space)
    np.testing.assert_array_equal(vector, clip_embedding(frames, lm.energy_db[: len(frames)], MatcherConfig.for_features("logmel")))
    with pytest.raises(FeatureSpaceMismatch, match="the library holds 'logmel/d39'") as info:
        query_embedding(frames, lm.energy_db, "logmel/d39")
    assert info.value.name == space


def test_a_group_that_raises_is_undone_whole(tmp_path: Path) -> None:
    path = tmp_path / "undo.db"
    with PatternLibrary(path, LibraryConfig(batch_size=100, batch_interval_s=1e9)) as lib:
        kept = lib.add_pattern(_vec(0), "f/d8", 1.0)  # pending, before any group
        assert lib.query_vector(_vec(0), 1)[0][0].id == kept  # the writer's index now holds it
        with pytest.raises(RuntimeError, match="boom"):
            with lib.group():
                lib.add_pattern(_vec(1), "f/d8", 1.0, pattern_id="undone")
                lib.record_occurrence(kept, "s", 0.0, 1.0, 0.5)
                with pytest.raises(LibraryError):
                    with lib.group():  # a nested group that fails is undone alone
                        lib.tag(kept, "inner")
                        lib.add_pattern(_vec(2), "f/d8", 1.0, pattern_id="undone")  # duplicate id
                raise RuntimeError("boom")
        assert lib.count() == 1 and lib.get(kept).occurrence_count == 0 and lib.get(kept).tags == ()
        with pytest.raises(PatternNotFoundError):
            lib.get("undone")
        assert [p.id for p, _ in lib.query_vector(_vec(1), 5)] == [kept]  # index rebuilt, not stale
        assert lib.pending == 1
        with lib.group():  # a group that commits when asked, at its end
            lib.tag(kept, "kept")
            lib.commit()
            with PatternLibrary(path, readonly=True) as reader:
                assert reader.count() == 0  # nothing committed inside the group
        assert lib.pending == 0
    with PatternLibrary(path, readonly=True) as reader:
        assert reader.count() == 1 and reader.get(kept).tags == ("kept",)


def test_import_of_a_bad_file_changes_nothing(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    with PatternLibrary(src) as lib:
        for i in range(3):
            lib.record_occurrence(lib.add_pattern(_vec(i), "f/d8", 1.0), "s", i, i + 1.0, 0.5)
        lib.export_json(tmp_path / "good.jsonl")
    lines = (tmp_path / "good.jsonl").read_text().splitlines()
    record = json.loads(lines[3])
    record["feature"] = "other/d8"  # the third pattern does not fit the library
    (tmp_path / "bad.jsonl").write_text("\n".join([*lines[:3], json.dumps(record)]) + "\n")
    with PatternLibrary(dst) as lib:
        lib.add_pattern(_vec(9), "f/d8", 1.0)
        with pytest.raises(LibraryError, match="does not fit"):
            lib.import_json(tmp_path / "bad.jsonl")
        assert lib.count() == 1
        assert lib.import_json(tmp_path / "good.jsonl") == 3 and lib.count() == 4
