"""The runtime and stream packages must run on an edge box with onnxruntime and numpy alone."""

import subprocess
import sys

HEAVY = ("torch", "transformers", "optimum", "ostinato.export")


def _loaded_after(statement: str) -> list[str]:
    code = (
        f"import sys; {statement}; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_runtime_import_stays_light() -> None:
    assert _loaded_after("import ostinato.runtime") == []


def test_stream_import_stays_light() -> None:
    assert _loaded_after("import ostinato.stream") == []


def test_cli_parser_stays_light() -> None:
    # Building the parser must not import the export stack: `ostinato doctor` works without it.
    assert _loaded_after("from ostinato.__main__ import build_parser; build_parser()") == []


def test_heavy_modules_are_detected() -> None:
    # Guard against the check above passing vacuously.
    assert "torch" in _loaded_after("import torch")
