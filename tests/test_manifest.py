import json
from pathlib import Path

import pytest

from ostinato.runtime.errors import ManifestError, ModelNotFoundError
from ostinato.runtime.manifest import FORMAT_VERSION, Manifest, OutputSpec, sha256_file


def _manifest(**overrides: object) -> Manifest:
    fields: dict[str, object] = dict(
        kind="wav2vec2",
        task="features",
        source="random:tiny",
        random_init=True,
        precision="fp32",
        opset=17,
        files={"model": "model.onnx"},
        outputs=(OutputSpec("last_hidden_state", 2, 32),),
        hidden_size=32,
        num_layers=2,
    )
    fields.update(overrides)
    return Manifest(**fields)  # type: ignore[arg-type]


def test_round_trip(tmp_path: Path) -> None:
    m = _manifest(validation={"max_abs_diff": 1e-6})
    m.write(tmp_path)
    back = Manifest.read(tmp_path)
    assert back == m
    assert back.outputs[0].layer == 2


def test_label_calls_out_random_weights() -> None:
    assert "RANDOM WEIGHTS" in _manifest().label
    assert "RANDOM" not in _manifest(random_init=False).label


def test_newer_format_is_refused(tmp_path: Path) -> None:
    data = _manifest().to_dict()
    data["format_version"] = FORMAT_VERSION + 1
    (tmp_path / "ostinato.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="newer") as info:
        Manifest.read(tmp_path)
    assert "upgrade" in info.value.hint


@pytest.mark.parametrize(
    ("content", "match"),
    [("{not json", "not valid JSON"), ("[1, 2]", "expected an object"), ('{"format_version": "1"}', "integer")],
)
def test_malformed_manifest(tmp_path: Path, content: str, match: str) -> None:
    (tmp_path / "ostinato.json").write_text(content)
    with pytest.raises(ManifestError, match=match):
        Manifest.read(tmp_path)


def test_missing_fields_are_a_manifest_error(tmp_path: Path) -> None:
    (tmp_path / "ostinato.json").write_text(json.dumps({"format_version": 1, "kind": "wav2vec2"}))
    with pytest.raises(ManifestError, match="malformed"):
        Manifest.read(tmp_path)


def test_unknown_kind(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="kind"):
        _manifest(kind="whisper")


def test_missing_dir_and_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        Manifest.read(tmp_path / "nope")
    with pytest.raises(ModelNotFoundError, match="not an exported ostinato model"):
        Manifest.read(tmp_path)


def test_sha256(tmp_path: Path) -> None:
    f = tmp_path / "x"
    f.write_bytes(b"abc")
    assert sha256_file(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
