"""New patterns described in the stream: ``ostinato run --match --describe-model`` end to end,
a full describe queue (drops counted, matching carries on), a broken model (error recorded),
and a first occurrence that left the audio ring (the latest one is described)."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from ostinato.__main__ import main
from ostinato.stream.clip_store import ClipStore, clip_dir_for
from ostinato.stream.describe import DescribeWorker, DescribeWorkerConfig, describer_for
from ostinato.stream.library import PatternLibrary
from ostinato.stream.matcher_stage import MatcherStage, MatcherStageConfig
from ostinato.stream.pattern_describe import PatternDescriber, PatternDescriberConfig

sys.path.insert(0, str(Path(__file__).parent))
from test_matcher import SR, _filler, _jingle, _place  # noqa: E402

W = 164080


def _recording(plan: list[tuple[int, float, float]], duration_s: float, seed: int = 5) -> np.ndarray:
    """Filler with jingles ``(seed, length_s, at_s)`` planted."""
    audio = _filler(duration_s, seed)
    for jseed, length_s, at_s in plan:
        _place(audio, _jingle(jseed, length_s), at_s)
    return audio


async def _feed(stage: MatcherStage, stream: str, audio: np.ndarray) -> None:
    """0.1 s blocks, yielding to the loop between them as the pipeline does."""
    for i in range(0, audio.size, 1600):
        stage.session.feed(stream, audio[i : i + 1600])
        await asyncio.sleep(0)


def _descriptions(db: Path) -> dict[str, dict[str, Any]]:
    with PatternLibrary(db, readonly=True) as lib:
        return {p.id: p.metadata for p in lib.list()}


def test_run_describes_each_new_pattern(tiny_w2v_dir: Path, tiny_gama_dir: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    audio = _recording([(60, 2.0, 3.0), (61, 2.4, 8.0), (60, 2.0, 16.0), (61, 2.4, 24.0)], 30.0)
    wav, db, events = tmp_path / "radio.wav", tmp_path / "patterns.db", tmp_path / "events.jsonl"
    sf.write(wav, audio, SR)
    code = main(["run", "--source", f"file:{wav}", "--model", str(tiny_w2v_dir), "--quiet", "--match",
                 "--library", str(db), "--events", str(events), "--describe-model", str(tiny_gama_dir),
                 "--describe-max-tokens", "12", "--describe-prompt", "What is this sound?"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "describe (tiny-fp32, RANDOM WEIGHTS): described 2, failed 0, dropped 0" in err
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    matches = [e for e in lines if e["event"] == "match"]
    described = {e["pattern_id"]: e for e in lines if e["event"] == "describe"}
    assert {m["pattern_id"] for m in matches} == set(described) and len(described) == 2
    stored = _descriptions(db)
    for pid, event in described.items():
        record = stored[pid]["description"]
        assert record["text"] == event["text"] and isinstance(event["text"], str) and event["error"] is None
        assert record["model"] == "tiny-fp32" and record["random_weights"] is True
        assert record["prompt"] == "What is this sound?" and record["clip"]["occurrence"] == "first"
        first = next(m for m in matches if m["pattern_id"] == pid)
        centre_s = (first["first_start_s"] + first["first_end_s"]) / 2
        stored_clip = ClipStore(clip_dir_for(db)).get(pid)
        assert stored_clip is not None
        clip, rate, info = stored_clip
        start = round(event["clip_start_s"] * SR)
        assert rate == SR and clip.size == W and info["start_s"] == event["clip_start_s"]
        assert abs(start - max(0, round(centre_s * SR) - W // 2)) <= 2  # centred on the first, clipped at 0
        np.testing.assert_allclose(clip, audio[start : start + W], atol=1.01 / 32767)  # the right audio


async def test_full_queue_drops_without_stalling_the_matcher(tiny_gama_dir: Path, tmp_path: Path) -> None:
    from ostinato.runtime.gama import GamaModel

    gate = threading.Event()
    with GamaModel.from_dir(tiny_gama_dir, provider="cpu") as model:
        real = describer_for(model, max_new_tokens=4)

        def held(audio: np.ndarray, sample_rate: int, prompt: str | None) -> str:
            if not gate.wait(60.0):
                raise TimeoutError("test gate never opened")
            return str(real(audio, sample_rate, prompt))

        worker = DescribeWorker(held, DescribeWorkerConfig(queue_size=1))
        worker.start()
        db = tmp_path / "patterns.db"
        describer = PatternDescriber(worker, PatternDescriberConfig("tiny", True, ring_s=60.0), ClipStore(clip_dir_for(db)))
        stage = MatcherStage(MatcherStageConfig(library_path=db))
        stage.session.attach_describer(describer)
        plan = [(60, 2.0, 2.0), (61, 2.4, 6.0), (62, 2.0, 10.0), (60, 2.0, 16.0), (61, 2.4, 21.0), (62, 2.0, 26.0)]
        await _feed(stage, "radio", _recording(plan, 32.0))
        # Everything was matched while the first job sat in the describer: nothing waited for it.
        assert stage.session.matches == 3 and worker.busy
        assert worker.stats.dropped_by == {"queue_full": 1} and worker.pending == 1
        assert "dropped 1" in stage.status_text()
        gate.set()
        await worker.close(drain_timeout_s=60.0)
        await stage.close()
    stored = _descriptions(db)
    assert sum("description" in m for m in stored.values()) == 2 and len(stored) == 3
    assert all(pid in ClipStore(clip_dir_for(db)) for pid in stored)  # the dropped one can be described later


async def test_broken_model_records_the_error_and_matching_goes_on(tiny_gama_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "gama-broken"
    shutil.copytree(tiny_gama_dir, broken)
    table = np.load(broken / "embed_tokens.npy")
    np.save(broken / "embed_tokens.npy", table[:2])  # truncated: every prompt token is out of range
    db, events = tmp_path / "patterns.db", tmp_path / "events.jsonl"
    describer = PatternDescriber.open(broken, {"ring_s": 60.0, "max_new_tokens": 4})
    stage = MatcherStage(MatcherStageConfig(library_path=db, events_path=events), describer)
    plan = [(60, 2.0, 3.0), (61, 2.4, 8.0), (60, 2.0, 16.0), (61, 2.4, 24.0)]
    await _feed(stage, "radio", _recording(plan, 30.0))
    await stage.close()
    assert stage.session.matches == 2 and describer.counts["failed"] == 2 and describer.worker.stats.failed == 2
    records = [m["description"] for m in _descriptions(db).values()]
    assert len(records) == 2 and all(r["text"] is None and "embedding table" in r["error"] for r in records)
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert sum(e["event"] == "describe" and e["error"] is not None for e in lines) == 2


async def test_first_occurrence_out_of_the_ring_describes_the_latest(tiny_gama_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "patterns.db"
    describer = PatternDescriber.open(tiny_gama_dir, {"ring_s": 11.0, "max_new_tokens": 4})
    stage = MatcherStage(MatcherStageConfig(library_path=db), describer)
    await _feed(stage, "radio", _recording([(60, 2.0, 2.0), (60, 2.0, 20.0)], 26.0))
    await stage.close()
    (record,) = [m["description"] for m in _descriptions(db).values()]
    assert record["clip"]["occurrence"] == "latest" and record["text"] is not None
    assert 10.0 <= record["clip"]["start_s"] <= 20.0 <= record["clip"]["end_s"]
    assert describer.ring_bytes == 0  # rings are freed when the stream ends
