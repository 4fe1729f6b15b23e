"""Vector index candidates for the pattern library, measured side by side in one run.

Measures, for each method and size: build time, single-insert latency, query latency
p50/p95 (k=10, one query at a time), recall@10 against exact search and size on disk.
Data: clustered synthetic unit vectors (768-d, like Wav2Vec2-base) and, with --real,
pattern embeddings pooled from random spans of log-mel evaluation streams (the library's
own vectors). Prints JSON lines and a markdown table.

    OPENBLAS_NUM_THREADS=1 python bench/vector_index_bench.py --sizes 10000,100000 --dims 768,78
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(16, n // 50), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def real_embeddings(n: int, seed: int) -> np.ndarray:
    """Pattern embeddings (mean ‖ std of normalised log-mel frames) of random spans."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from matcher_streams import CONDITIONS, make_stream

    from ostinato.runtime.logmel import LogMel
    from ostinato.stream.embedding import pool_frames
    from ostinato.stream.matcher import FeatureBlock, MatcherConfig, PatternMatcher

    cache = Path.home() / ".cache" / "ostinato" / "matcher_eval"
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    s = 0
    while len(out) < n:
        stream = make_stream(9000 + s, CONDITIONS["snr20"], 240, cache)
        s += 1
        lm = LogMel().compute(stream.audio)
        m = PatternMatcher(MatcherConfig.for_features("logmel"), stream="x")
        m.push(FeatureBlock(lm.features.frames, lm.energy_db))
        assert m._ring is not None
        frames, ok = m._ring.span(0, m._ring.end)
        for _ in range(min(n - len(out), 40000)):
            a = int(rng.integers(0, len(frames) - 200))
            b = a + int(rng.integers(75, 200))
            sel = frames[a:b][ok[a:b]]
            if len(sel) > 10:
                out.append(pool_frames(sel))
    return np.stack(out[:n])


def exact_topk(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ base.T), axis=1)[:, :k]


def _timeit(fn: Callable[[], Any], reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def run_method(name: str, base: np.ndarray, queries: np.ndarray, truth: np.ndarray, tmp: Path) -> dict[str, Any]:
    n, dim = base.shape
    k = 10
    extra = base[:50] + 0.01
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    path = tmp / f"{name}.idx"
    t0 = time.perf_counter()
    if name == "numpy-flat":
        index = base.copy()
        build_s = time.perf_counter() - t0

        def search(q: np.ndarray) -> np.ndarray:
            s = index @ q
            top = np.argpartition(-s, k)[:k]
            return top[np.argsort(-s[top])]

        insert = _timeit(lambda: np.vstack([index, extra[:1]]), 5)
        np.save(path.with_suffix(".npy"), index)
        disk = path.with_suffix(".npy").stat().st_size
    elif name.startswith("usearch"):
        from usearch.index import Index

        dtype = "f16" if name.endswith("f16") else "f32"
        index = Index(ndim=dim, metric="ip", dtype=dtype, connectivity=16, expansion_add=128, expansion_search=64)
        index.add(np.arange(n), base)
        build_s = time.perf_counter() - t0
        counter = iter(range(n, n + 1000))
        insert = _timeit(lambda: index.add(next(counter), extra[0]), 50)

        def search(q: np.ndarray) -> np.ndarray:
            return np.asarray(index.search(q, k).keys)

        index.save(str(path))
        disk = path.stat().st_size
    elif name == "hnswlib":
        import hnswlib

        index = hnswlib.Index(space="ip", dim=dim)
        index.init_index(max_elements=n + 1000, ef_construction=200, M=16)
        index.add_items(base, np.arange(n))
        index.set_ef(64)
        build_s = time.perf_counter() - t0
        counter = iter(range(n, n + 1000))
        insert = _timeit(lambda: index.add_items(extra[:1], [next(counter)]), 50)

        def search(q: np.ndarray) -> np.ndarray:
            return index.knn_query(q, k)[0][0]

        index.save_index(str(path))
        disk = path.stat().st_size
    elif name.startswith("faiss"):
        import faiss

        index = faiss.IndexFlatIP(dim) if name == "faiss-flat" else faiss.IndexHNSWFlat(dim, 16, faiss.METRIC_INNER_PRODUCT)
        if name != "faiss-flat":
            index.hnsw.efConstruction = 200
            index.hnsw.efSearch = 64
        index.add(base)
        build_s = time.perf_counter() - t0
        insert = _timeit(lambda: index.add(extra[:1]), 50)

        def search(q: np.ndarray) -> np.ndarray:
            return index.search(q[None, :], k)[1][0]

        faiss.write_index(index, str(path))
        disk = path.stat().st_size
    elif name == "sqlite-vec":
        import pysqlite3 as sqlite3
        import sqlite_vec

        db = sqlite3.connect(str(path))
        db.enable_load_extension(True)
        sqlite_vec.load(db)
        db.execute(f"CREATE VIRTUAL TABLE v USING vec0(embedding float[{dim}] distance_metric=cosine)")
        db.executemany("INSERT INTO v(rowid, embedding) VALUES (?, ?)", ((i, base[i].tobytes()) for i in range(n)))
        db.commit()
        build_s = time.perf_counter() - t0
        counter = iter(range(n, n + 1000))

        def ins() -> None:
            db.execute("INSERT INTO v(rowid, embedding) VALUES (?, ?)", (next(counter), extra[0].tobytes()))
            db.commit()

        insert = _timeit(ins, 20)

        def search(q: np.ndarray) -> np.ndarray:
            rows = db.execute("SELECT rowid FROM v WHERE embedding MATCH ? AND k = ?", (q.tobytes(), k)).fetchall()
            return np.array([r[0] for r in rows])

        db.close()
        db = sqlite3.connect(str(path))
        db.enable_load_extension(True)
        sqlite_vec.load(db)
        disk = path.stat().st_size
    else:
        raise ValueError(name)
    found = []
    lat = []
    for q in queries:
        t = time.perf_counter()
        found.append(search(q))
        lat.append((time.perf_counter() - t) * 1e3)
    recall = float(np.mean([len(set(map(int, f)) & set(map(int, t))) / k for f, t in zip(found, truth)]))
    return {
        "method": name,
        "n": n,
        "dim": dim,
        "build_s": round(build_s, 2),
        "insert_ms_p50": round(statistics.median(insert), 3),
        "query_ms_p50": round(float(np.percentile(lat, 50)), 3),
        "query_ms_p95": round(float(np.percentile(lat, 95)), 3),
        "recall_at_10": round(recall, 4),
        "disk_mb": round(disk / 1e6, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--dims", default="768,78", help="78 = the library's log-mel pattern embeddings (--real)")
    ap.add_argument("--methods", default="numpy-flat,usearch-f32,usearch-f16,hnswlib,faiss-flat,faiss-hnsw,sqlite-vec")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--real", action="store_true", help="use real log-mel pattern embeddings for dim 78")
    ap.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dim in map(int, args.dims.split(",")):
            for n in map(int, args.sizes.split(",")):
                data = real_embeddings(n + args.queries, 1) if args.real and dim == 78 else clustered(n + args.queries, dim, 1)
                base, queries = data[: n], data[n:]
                truth = exact_topk(base, queries, 10)
                for method in args.methods.split(","):
                    try:
                        row = run_method(method, base, queries, truth, Path(tmp))
                    except Exception as e:  # noqa: BLE001 - a missing optional package is reported, not fatal
                        row = {"method": method, "n": n, "dim": dim, "error": repr(e)[:120]}
                    row["data"] = "real-logmel" if args.real and dim == 78 else "clustered-synthetic"
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    if args.out:
                        with args.out.open("a") as f:
                            f.write(json.dumps(row) + "\n")
                    for p in Path(tmp).iterdir():
                        p.unlink()
    print("\n| method | n | dim | build s | insert ms | query p50 ms | p95 ms | recall@10 | disk MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['method']} | {r['n']} | {r['dim']} | error: {r['error']} |||||")
        else:
            print(f"| {r['method']} | {r['n']} | {r['dim']} | {r['build_s']} | {r['insert_ms_p50']} | {r['query_ms_p50']} | {r['query_ms_p95']} | {r['recall_at_10']} | {r['disk_mb']} |")
    print(f"\nOPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}; machine shared, numbers noisy.")


if __name__ == "__main__":
    main()
