"""CLI: ostinato match FILE and ostinato library list|show|query|tag|rename|merge|delete|export|import."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from ostinato.__main__ import main

sys.path.insert(0, str(Path(__file__).parent))
from test_matcher import SR, _filler, _jingle, _place  # noqa: E402


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    audio = _filler(40.0, 50)
    jingles = [_jingle(60, 2.0), _jingle(61, 2.4)]
    for at, j in ((2.0, 0), (8.0, 1), (18.0, 0), (26.0, 1), (34.0, 0)):
        _place(audio, jingles[j], at)
    path = tmp_path_factory.mktemp("rec") / "radio.wav"
    sf.write(path, audio, SR)
    return path, jingles


def test_match_then_library_commands(recording: tuple[Path, list[np.ndarray]], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wav, jingles = recording
    events, db = tmp_path / "events.jsonl", tmp_path / "patterns.db"
    assert main(["match", str(wav), "--events", str(events), "--library", str(db)]) == 0
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    assert [round(x["start_s"]) for x in lines] == [18, 26, 34]
    assert lines[0]["pattern_id"] == lines[2]["pattern_id"] != lines[1]["pattern_id"]
    assert lines[0]["pattern_id"].startswith("pat-") and abs(lines[0]["first_start_s"] - 2.0) < 0.15
    capsys.readouterr()

    lib = ["library", "--library", str(db)]
    assert main([*lib, "--json", "list"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(p["occurrence_count"] for p in listed) == [2, 3]
    first = lines[0]["pattern_id"]

    clip = tmp_path / "clip.wav"
    sf.write(clip, jingles[0], SR)
    assert main([*lib, "--json", "query", str(clip), "-k", "2"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["id"] == first and hits[0]["similarity"] > 0.9 > hits[1]["similarity"]

    assert main([*lib, "tag", first, "jingle", "station-id"]) == 0
    assert main([*lib, "rename", first, "station id"]) == 0
    capsys.readouterr()
    assert main([*lib, "--json", "query", "--tag", "jingle"]) == 0
    assert [p["name"] for p in json.loads(capsys.readouterr().out)] == ["station id"]
    assert main([*lib, "--json", "list", "--stream", "radio"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert main([*lib, "--json", "list", "--since", "2000-01-01T00:00", "--until", "2000-01-02"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main([*lib, "show", first]) == 0
    shown = capsys.readouterr().out
    assert "station id" in shown and "occurrences (3)" in shown

    export = tmp_path / "export.jsonl"
    assert main([*lib, "export", str(export)]) == 0
    second = lines[1]["pattern_id"]
    assert main([*lib, "merge", first, second]) == 0
    assert main([*lib, "delete", first]) == 0
    capsys.readouterr()
    assert main([*lib, "--json", "list"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main([*lib, "import", str(export)]) == 0
    assert main([*lib, "--json", "list"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


def test_library_errors_are_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["library", "--library", str(tmp_path / "none.db"), "list"]) == 2
    assert "does not exist" in capsys.readouterr().err
    db = tmp_path / "l.db"
    assert main(["library", "--library", str(db), "tag", "pat-x", "a"]) == 2
    err = capsys.readouterr().err
    assert "no pattern with id 'pat-x'" in err and "hint:" in err
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(SR, np.float32), SR)
    assert main(["library", "--library", str(db), "query", str(silent)]) == 2
    assert "empty" in capsys.readouterr().err


def test_match_describes_each_new_pattern_from_a_clip_of_the_file(recording: tuple[Path, list[np.ndarray]], tiny_gama_dir: Path,
                                                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ostinato.stream.clip_store import ClipStore, clip_dir_for
    from ostinato.stream.library import PatternLibrary

    wav, _ = recording
    events, db = tmp_path / "events.jsonl", tmp_path / "patterns.db"
    argv = ["match", str(wav), "--events", str(events), "--library", str(db), "--describe-model", str(tiny_gama_dir),
            "--describe-max-tokens", "8", "--describe-prompt", "What is this sound?"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "RANDOM WEIGHTS" in err and "described 2, failed 0, already described 0" in err, err
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    firsts: dict[str, dict[str, Any]] = {}
    for e in lines:
        if e["event"] == "match":
            firsts.setdefault(e["pattern_id"], e)
    described = {e["pattern_id"]: e for e in lines if e["event"] == "describe"}
    assert set(described) == set(firsts) and len(described) == 2
    audio, rate = sf.read(wav, dtype="float32")
    window = 164080  # GAMA's clip: centred on the first occurrence, clipped at the file start
    with PatternLibrary(db, readonly=True) as lib:
        for pid, event in described.items():
            record = lib.get(pid).metadata["description"]
            assert isinstance(event["text"], str) and event["error"] is None and record["text"] == event["text"]
            assert record["prompt"] == "What is this sound?" and record["random_weights"] is True
            first = firsts[pid]
            centre = round((first["first_start_s"] + first["first_end_s"]) / 2 * rate)
            start = round(event["clip_start_s"] * rate)
            assert abs(start - max(0, centre - window // 2)) <= 2 and event["occurrence"] == "first"
            stored = ClipStore(clip_dir_for(db)).get(pid)
            assert stored is not None and stored[0].size == window
            np.testing.assert_allclose(stored[0], audio[start : start + window], atol=1.01 / 32767)
    assert any(round(e["clip_start_s"]) > 0 for e in described.values())  # the 8 s jingle: a centred clip

    assert main(argv) == 0  # the same library again: its patterns are described already
    assert "described 0, failed 0, already described 2" in capsys.readouterr().err


def test_min_evidence_trades_recall_for_fewer_false_alarms(recording: tuple[Path, list[np.ndarray]], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    wav, _ = recording
    found = {}
    for evidence in ("0.8", "10"):
        events = tmp_path / f"events-{evidence}.jsonl"
        assert main(["match", str(wav), "--events", str(events), "--min-evidence", evidence]) == 0
        found[evidence] = [round(json.loads(x)["start_s"]) for x in events.read_text().splitlines()]
    assert found == {"0.8": [18, 26, 34], "10": []}  # clean 2 s jingles pass 0.8; nothing reaches 10
    capsys.readouterr()
    assert main(["match", str(wav), "--min-evidence", "0"]) == 2
    assert "--min-evidence 0.0" in capsys.readouterr().err
    assert main(["match", str(wav), "--features", "wav2vec2", "--min-evidence", "0.8"]) == 2
    assert "applies to --features logmel" in capsys.readouterr().err
