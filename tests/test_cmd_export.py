"""``ostinato export wav2vec2``: a real export through the CLI, its summary and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ostinato import cmd_export
from ostinato.__main__ import main
from ostinato.export import specs
from ostinato.runtime.manifest import Manifest


def test_cli_exports_and_shouts_random_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m"
    # The 32-wide test model holds 0.95, not the default 0.99, on speech over a noise floor.
    code = main(["export", "wav2vec2", "--model", "random:tiny", "--precision", "int8", "--layers", "1,2",
                 "--min-cosine", "0.95", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.err.count("RANDOM WEIGHTS") == 2
    assert "exported: wav2vec2 features int8 from random:tiny [RANDOM WEIGHTS" in captured.out
    assert "hidden_state_1[32]" in captured.out and "per-frame cosine min" in captured.out
    m = Manifest.read(out)
    assert m.precision == "int8" and [o.layer for o in m.outputs] == [2, 1, 2]
    assert m.validation["int8"]["min_cosine_required"] == 0.95


def test_cli_no_validate_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "wav2vec2", "--model", "random:tiny", "--out", str(tmp_path / "m"), "--no-validate"]) == 0
    assert "SKIPPED (--no-validate)" in capsys.readouterr().out


def test_cli_user_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "wav2vec2", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "error: model directory" in err and "hint:" in err
    assert main(["export", "wav2vec2", "--model", "random:tiny", "--layers", "7", "--out", str(tmp_path / "m")]) == 2
    assert "layers 0..2" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("argv", [["--layers", "a,b"], ["--layers", "-1"], ["--precision", "int4"], ["--task", "asr"]])
def test_cli_rejects_bad_arguments(tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["export", "wav2vec2", "--model", "random:tiny", "--out", str(tmp_path / "m"), *argv])
    assert info.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_cli_choices_match_the_exporter() -> None:
    assert cmd_export._TASKS == specs.TASKS
    assert cmd_export._PRECISIONS == specs.PRECISIONS
    assert cmd_export._RANDOM_MODELS == specs.RANDOM_MODELS
    assert cmd_export._DEFAULT_OPSET == specs.DEFAULT_OPSET
