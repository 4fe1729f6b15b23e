"""SegmentIndex: exact top-k over a ring, and the two-view comparison (slow | fast halves)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from ostinato.stream.segment_index import SegmentIndex


def _unit(v: npt.ArrayLike) -> npt.NDArray[np.float32]:
    a = np.asarray(v, dtype=np.float32)
    return (a / np.linalg.norm(a)).astype(np.float32)


def _two(slow: npt.ArrayLike, fast: npt.ArrayLike | None) -> npt.NDArray[np.float32]:
    half = _unit(slow)
    return np.concatenate([half, _unit(fast) if fast is not None else np.zeros_like(half)])


def test_single_view_is_exact_top_k_within_the_start_range_and_the_ring_evicts() -> None:
    rng = np.random.default_rng(0)
    index = SegmentIndex(capacity=50, dim=16)
    vectors = [_unit(rng.standard_normal(16)) for _ in range(80)]
    for i, v in enumerate(vectors):
        index.add(10 * i, v)
    assert index.size == 50  # the 30 oldest were overwritten
    query = vectors[60] + 0.1 * vectors[70]
    starts, sims = index.search(query, min_start=300, max_start=650, k=5)
    held = {10 * i: float(vectors[i] @ query) for i in range(30, 66)}
    expected = sorted(held, key=lambda s: -held[s])[:5]
    assert starts.tolist() == expected and starts[0] == 600
    assert np.allclose(sims, [held[s] for s in expected], atol=1e-6)
    assert index.search(query, 700, 650, 5)[0].size == 0


def test_two_views_compare_settled_segments_by_the_weighted_views_and_early_ones_by_the_slow_view() -> None:
    index = SegmentIndex(capacity=8, dim=4, two_views=True, slow_weight=0.0)
    index.add(0, _two([1, 0], None))  # before the fast view settled: slow half only
    index.add(10, _two([1, 0], [0, 1]), settled=True)  # same slow view, other movement
    index.add(20, _two([0, 1], [1, 0]), settled=True)  # other slow view (the noise), same movement
    query = _two([1, 0], [1, 0])
    starts, sims = index.search(query, 0, 100, 3, settled=True)
    assert dict(zip(starts.tolist(), sims.tolist(), strict=True)) == pytest.approx({0: 1.0, 10: 0.0, 20: 1.0})
    # A query from before the fast view settled compares every segment by the slow view.
    starts, sims = index.search(_two([1, 0], None), 0, 100, 3, settled=False)
    assert dict(zip(starts.tolist(), sims.tolist(), strict=True)) == pytest.approx({0: 1.0, 10: 1.0, 20: 0.0})
    halfway = SegmentIndex(capacity=8, dim=4, two_views=True, slow_weight=0.5)
    halfway.add(0, _two([0.6, 0.8], None))
    halfway.add(20, _two([0, 1], [1, 0]), settled=True)
    starts, sims = halfway.search(query, 0, 100, 2, settled=True)
    assert dict(zip(starts.tolist(), sims.tolist(), strict=True)) == pytest.approx({0: 0.6, 20: 0.5})


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        SegmentIndex(0, 4)
    with pytest.raises(ValueError, match="even"):
        SegmentIndex(4, 5, two_views=True)
    with pytest.raises(ValueError, match="slow_weight"):
        SegmentIndex(4, 4, two_views=True, slow_weight=1.5)
