"""Second-stage verification of a repeat on raw log-power frames (sans-IO).

The matcher finds and follows repeats on normalised frames whose statistics run over the
whole stream (``frame_norm``). Before a repeat is reported, :func:`pair_contrast` compares the
two occurrences once more, on the raw log-mel frames of just this pair:

1. **symmetric noise flooring**: both occurrences are raised to a common per-band floor, the
   larger of the two occurrences' own per-band minimum + a margin. A band that noise buries in
   one occurrence becomes the same constant in both and drops out, instead of comparing the
   clean band of one with the noise of the other. A run of bands at the low or high edge of
   the spectrum that one occurrence never lifts above that floor (its 90 % quantile stays
   under it) while the other does is a band the channel removed — a telephone line, a
   low-rate codec — and the pair is compared on the bands they have in common (with the
   cepstral resolution per band kept). A band missing in the middle of the spectrum, or
   missing in both, still counts;
2. cepstrum (DCT coefficients ``1 … coefficients-1``) and mean and variance normalisation per
   occurrence over the pair (the voice's timbre, channel and noise spectrum go);
3. the *contrast*: mean cosine of aligned frames minus the median over lag offsets (the
   parallel diagonals, ±0.1–0.4 s) of the mean cosine of misaligned frames, and its
   *evidence* ``contrast × sqrt(frames / 50)`` (a longer pair that keeps aligning is stronger
   evidence than a 1.2 s one; 50 frames = 1 s).

A repeat aligns frame by frame however much noise covers it; a look-alike in the same voice
(a hard negative, a pause between two sentences of the same speakers, a run of notes of one
timbre) matches about as well a fraction of a second off as on the diagonal.

:func:`loud_mismatch` is a second test on the same pair: the fraction of frames that are
*loud in both occurrences* (``loud_db`` above the common floor, averaged over the bands) yet
do not match (cosine below 0.3 at the path's lag ±1 frame). Noise explains a mismatching
frame only where one occurrence is near its floor; a hard negative (the same voice saying the
phrase with every other word changed) mismatches at its changed consonants while both
occurrences are loud.

:func:`floor_difference` is how much closer one occurrence sits to its own noise floor than the
other (dB; a gain change does not count): a pair heard in different noise. Only such a pair
may be reported shorter than ``min_pattern_s`` (:func:`short_pair_accepted`,
``MatcherConfig.short_noisy_pattern_s``): noise breaks a repeat's track into pieces where it
buries a word, while a hard negative heard in the same conditions leaves pieces of the same
length, and those stay unreported.

:func:`pair_accepted` is the decision on both numbers (``MatcherConfig``): evidence ≥
``verify_min_evidence`` and mismatch ≤ ``verify_max_mismatch``; or, for an *aligned* pair —
at least ``verify_aligned_activity`` of the span's frames active in both occurrences (their
pauses line up) and no loud frame mismatching (≤ 2 %) — evidence ≥
``verify_aligned_evidence``. Noise takes pair evidence away from a repeat but leaves it
aligned; a chance resemblance between different speech or notes is rarely aligned.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ostinato.stream.frame_ring import FrameRing
from ostinato.stream.matcher_config import MatcherConfig

__all__ = ["floor_difference", "loud_mismatch", "pair_accepted", "pair_evidence", "short_pair_accepted"]

_FRAMES_PER_UNIT = 50.0
_MISMATCH_COEFFICIENTS = 20  # cepstral coefficients 1-19 (the spectral envelope) for the mismatch test
_MISMATCH_COSINE = 0.3  # a loud frame whose best cosine (lag ±1) is below this mismatches
_MISMATCH_EDGE = 8  # frames left out at each end of the pair (boundaries are approximate)
_ALIGNED_MISMATCH = 0.02  # loud mismatches tolerated in an aligned pair
_ALIVE_QUANTILE = 0.9  # a band is alive in an occurrence when this quantile of it clears the floor
_MIN_COMMON_BANDS = 8  # fewer bands in common: compare all of them


def _dct(input_dim: int, coefficients: int) -> npt.NDArray[np.float32]:
    n = np.arange(input_dim)
    k = np.arange(1, min(coefficients, input_dim))
    return (np.cos(np.pi * (n[:, None] + 0.5) * k[None, :] / input_dim)).astype(np.float32)


def _cmvn(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    # The floor of the deviation (0.5, in dB-scaled DCT units) keeps coefficients that do not
    # move (a stationary sound, a band flattened by the noise floor) from being blown up.
    y = x - x.mean(axis=0, keepdims=True)
    y = y / (y.std(axis=0, keepdims=True) + 0.5)
    norms = np.linalg.norm(y, axis=1, keepdims=True)
    out: npt.NDArray[np.float32] = (y / np.maximum(norms, 1e-6)).astype(np.float32)
    return out


def _edge_runs(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """The runs of ``mask`` that touch the lowest or the highest band."""
    out = np.zeros_like(mask)
    n = mask.size
    low = n if mask.all() else int(np.argmin(mask))
    high = n if mask.all() else int(np.argmin(mask[::-1]))
    out[:low] = True
    out[n - high :] = True
    return out


def _scaled(coefficients: int, common: npt.NDArray[np.bool_]) -> int:
    """Cepstral coefficients for the ``common`` bands: the same resolution per band."""
    return max(2, round(coefficients * int(common.sum()) / common.size))


def _held_pair(
    raw: FrameRing, ts: npt.NDArray[np.int64], lags: npt.NDArray[np.int64], margin_db: float
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.bool_], npt.NDArray[np.float32], npt.NDArray[np.bool_]] | None:
    """The two occurrences' frames held and active in both, the mask that chose them, their
    shared per-band noise floor (+ ``margin_db``) and the bands they are compared on (all but
    a band missing at the spectrum's edge in one of them, module docstring step 1); ``None``
    when fewer than 8 such frames."""
    x, ok_x = raw.take(ts)
    y, ok_y = raw.take(ts - lags)
    ok = ok_x & ok_y
    if ok.sum() < 8:
        return None
    x, y = x[ok], y[ok]
    floor: npt.NDArray[np.float32] = np.maximum(x.min(axis=0), y.min(axis=0)) + np.float32(margin_db)
    # Bands at the edge of the spectrum that one occurrence never lifts above the floor while
    # the other does: a telephone line's or a codec's missing band. Compared on the rest.
    quiet_x = np.quantile(x, _ALIVE_QUANTILE, axis=0) <= floor
    quiet_y = np.quantile(y, _ALIVE_QUANTILE, axis=0) <= floor
    missing = _edge_runs(quiet_x & ~quiet_y) | _edge_runs(quiet_y & ~quiet_x)
    common: npt.NDArray[np.bool_] = ~missing if (~missing).sum() >= _MIN_COMMON_BANDS else np.ones_like(missing)
    return x, y, ok, floor, common


def pair_evidence(
    raw: FrameRing,
    ts: npt.NDArray[np.int64],
    lags: npt.NDArray[np.int64],
    offsets: tuple[int, ...],
    coefficients: int,
    margin_db: float,
) -> float:
    """Evidence (contrast × sqrt(frames / 50)) that frames ``ts`` repeat frames ``ts - lags``,
    on raw log-power frames (module docstring); ``nan`` when fewer than 8 frames of both
    occurrences are held and active.
    """
    pair = _held_pair(raw, ts, lags, margin_db)
    if pair is None:
        return float("nan")
    x, y, ok, floor, common = pair
    x, y, floor = x[:, common], y[:, common], floor[common]
    coefficients = _scaled(coefficients, common)
    dct = _dct(x.shape[1], coefficients)
    fx = _cmvn(np.maximum(x, floor) @ dct)
    fy = _cmvn(np.maximum(y, floor) @ dct)
    diag = float(np.einsum("ij,ij->i", fx, fy).mean())
    # Misaligned: the same earlier frames shifted by each offset (their own normalisation).
    t_ok, l_ok = ts[ok], lags[ok]
    means = []
    for off in offsets:
        z, ok_z = raw.take(t_ok - l_ok - off)
        if ok_z.sum() < max(8, ok_z.size // 2):
            continue
        fz = _cmvn(np.maximum(z[ok_z][:, common], floor) @ dct)
        means.append(float(np.einsum("ij,ij->i", fx[ok_z], fz).mean()))
    if not means:
        return float("nan")
    return (diag - float(np.median(means))) * float(np.sqrt(ok.sum() / _FRAMES_PER_UNIT))


def _unit(c: npt.NDArray[np.float32], mean: npt.NDArray[np.float32], dev: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    y = (c - mean) / dev
    out: npt.NDArray[np.float32] = (y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-6)).astype(np.float32)
    return out


def loud_mismatch(
    raw: FrameRing, ts: npt.NDArray[np.int64], lags: npt.NDArray[np.int64], margin_db: float, loud_db: float
) -> float:
    """Fraction of the pair's inner frames, among those loud in both occurrences, that match
    at none of the lags ``ts - lags`` ± 1 (module docstring); 0 when no frame is loud in both,
    ``nan`` when fewer than 8 frames of both occurrences are held and active.
    """
    pair = _held_pair(raw, ts, lags, margin_db)
    if pair is None:
        return float("nan")
    x, y, ok, floor, common = pair
    x, y, floor = x[:, common], y[:, common], floor[common]
    dct = _dct(x.shape[1], _scaled(_MISMATCH_COEFFICIENTS, common))
    fx = _cmvn(np.maximum(x, floor) @ dct)
    cy = np.maximum(y, floor) @ dct
    mean, dev = cy.mean(axis=0), cy.std(axis=0) + np.float32(0.5)
    best = np.full(fx.shape[0], -2.0, np.float32)
    for shift in (-1, 0, 1):
        z, _ = raw.take(ts[ok] - lags[ok] - shift)
        best = np.maximum(best, np.einsum("ij,ij->i", fx, _unit(np.maximum(z[:, common], floor) @ dct, mean, dev)))
    level = np.minimum(np.maximum(x - floor, 0).mean(axis=1), np.maximum(y - floor, 0).mean(axis=1))
    n, e = best.size, _MISMATCH_EDGE
    inner = slice(e, n - e) if n > 2 * e + 5 else slice(0, n)
    loud = level[inner] > loud_db
    bad = loud & (best[inner] < _MISMATCH_COSINE)
    return float(bad.sum() / max(int(loud.sum()), 1))


def floor_difference(raw: FrameRing, ts: npt.NDArray[np.int64], lags: npt.NDArray[np.int64]) -> float:
    """How much closer one occurrence sits to its noise floor than the other (dB, absolute):
    per occurrence, its mean level minus its per-band minima (averaged over bands), over frames
    ``ts`` and ``ts - lags`` held and active in both; 0 when fewer than 8 such frames. A gain
    change moves level and floor together and does not count."""
    pair = _held_pair(raw, ts, lags, 0.0)
    if pair is None:
        return 0.0
    x, y = pair[0].astype(np.float32), pair[1].astype(np.float32)
    return abs(float((x.mean() - x.min(axis=0).mean()) - (y.mean() - y.min(axis=0).mean())))


def short_pair_accepted(config: MatcherConfig, evidence: float, mismatch: float, activity: float, noise_db: float) -> bool:
    """The decision for a pair shorter than ``min_pattern_s`` (module docstring): heard in
    different noise (``noise_db`` = :func:`floor_difference` ≥ ``noisy_floor_db``), aligned
    (activity ≥ ``verify_aligned_activity``, loud mismatches ≤ 2 %) and with the full evidence
    ``verify_min_evidence``."""
    c = config
    if c.short_noisy_pattern_s is None or c.verify_min_evidence is None:
        return False
    return bool(
        noise_db >= c.noisy_floor_db
        and activity >= c.verify_aligned_activity
        and mismatch <= _ALIGNED_MISMATCH
        and evidence >= c.verify_min_evidence
    )


def pair_accepted(config: MatcherConfig, evidence: float, mismatch: float, activity: float) -> bool:
    """The verification's decision (module docstring) for a pair with ``evidence``
    (:func:`pair_evidence`), ``mismatch`` (:func:`loud_mismatch`) and ``activity`` (fraction
    of its span active in both occurrences)."""
    c = config
    if c.verify_min_evidence is None:
        return True
    if evidence >= c.verify_min_evidence:
        return c.verify_max_mismatch is None or bool(mismatch <= c.verify_max_mismatch)
    aligned = activity >= c.verify_aligned_activity and mismatch <= _ALIGNED_MISMATCH
    return aligned and c.verify_aligned_evidence is not None and evidence >= c.verify_aligned_evidence
