from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ostinato.runtime import providers as prov
from ostinato.runtime.errors import InputError, ModelLoadError, ModelNotFoundError, ProviderUnavailableError
from ostinato.runtime.metrics import PROVIDER_FALLBACKS
from ostinato.runtime.session import Session, SessionConfig

CUDA_LOADS = prov.load_error(prov.CUDA) is None and prov.CUDA in prov.ort.get_available_providers()


@pytest.fixture(scope="module")
def scale_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """y = 2 * x for float32 x of shape [batch, samples]."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "samples"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "samples"])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["y"])], "scale", [x], [y], [two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("models") / "scale.onnx"
    onnx.save(model, path)
    return path


def test_runs_and_reports_providers(scale_model: Path) -> None:
    with Session.from_path(scale_model, SessionConfig(provider="cpu", intra_op_threads=1)) as s:
        out = s.run({"x": np.ones((2, 5), np.float32)})
        assert s.providers == ("CPUExecutionProvider",)
        assert not s.fell_back
        assert s.input_names == ("x",) and s.output_names == ("y",)
        np.testing.assert_array_equal(out["y"], np.full((2, 5), 2.0, np.float32))


@pytest.mark.parametrize(
    ("feeds", "match"),
    [
        ({"x": np.ones((2, 5), np.float64)}, "dtype float64; expected float32"),
        ({"x": np.ones(5, np.float32)}, "expected rank 2"),
        ({"z": np.ones((1, 1), np.float32)}, r"missing \['x'\], unknown \['z'\]"),
    ],
)
def test_bad_feeds_are_input_errors(scale_model: Path, feeds: dict[str, np.ndarray], match: str) -> None:
    with Session.from_path(scale_model, SessionConfig(provider="cpu")) as s:
        with pytest.raises(InputError, match=match):
            s.run(feeds)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist") as info:
        Session.from_path(tmp_path / "absent.onnx")
    assert "ostinato export" in info.value.hint


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_file_is_a_load_error(scale_model: Path, tmp_path: Path, damage: str) -> None:
    data = scale_model.read_bytes()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00not an onnx file" * 8)
    with pytest.raises(ModelLoadError, match="cannot load") as info:
        Session.from_path(bad, SessionConfig(provider="cpu"))
    assert "export it again" in info.value.hint


def test_closed_session_refuses_to_run(scale_model: Path) -> None:
    s = Session.from_path(scale_model, SessionConfig(provider="cpu"))
    s.close()
    s.close()  # idempotent
    with pytest.raises(Exception, match="closed"):
        s.run({"x": np.ones((1, 1), np.float32)})


def test_unclosed_session_warns(scale_model: Path) -> None:
    s = Session.from_path(scale_model, SessionConfig(provider="cpu"))
    with pytest.warns(ResourceWarning, match="not closed"):
        s.__del__()


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="provider='gpu'"):
        SessionConfig(provider="gpu")
    with pytest.raises(ValueError, match="intra_op_threads=-1"):
        SessionConfig(intra_op_threads=-1)
    with pytest.raises(ValueError, match="graph_optimization"):
        SessionConfig(graph_optimization="max")


@pytest.mark.parametrize(("spin", "entry"), [(False, "0"), (True, "1")])
def test_thread_spinning_is_off_unless_asked(scale_model: Path, spin: bool, entry: str) -> None:
    config = SessionConfig(intra_op_threads=2, allow_spinning=spin) if spin else SessionConfig(intra_op_threads=2)
    options = config.session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == entry
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == entry
    session = Session.from_path(scale_model, config)
    try:
        y = session.run({"x": np.ones((2, 3), np.float32)})["y"]
        assert np.array_equal(y, np.full((2, 3), 2.0, np.float32))
    finally:
        session.close()


def test_resolve_providers() -> None:
    gpu_build = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    cpu_build = ["CPUExecutionProvider"]
    names = lambda plist: [p for p, _ in plist]  # noqa: E731
    assert names(prov.resolve_providers("auto", gpu_build)) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert names(prov.resolve_providers("auto", cpu_build)) == ["CPUExecutionProvider"]
    assert names(prov.resolve_providers("tensorrt", gpu_build))[0] == "TensorrtExecutionProvider"
    cuda_opts = dict(prov.resolve_providers("cuda", gpu_build))["CUDAExecutionProvider"]
    assert cuda_opts["cudnn_conv_algo_search"] == "HEURISTIC"
    with pytest.raises(ProviderUnavailableError, match="lacks") as info:
        prov.resolve_providers("cuda", cpu_build)
    assert "--provider cpu" in info.value.hint
    with pytest.raises(ValueError, match="expected one of"):
        prov.resolve_providers("metal", gpu_build)


@pytest.mark.skipif(CUDA_LOADS, reason="this machine has working CUDA libraries: no fallback to observe")
def test_cuda_request_falls_back_visibly(scale_model: Path, caplog: pytest.LogCaptureFixture) -> None:
    if prov.CUDA not in prov.ort.get_available_providers():
        pytest.skip("CPU-only onnxruntime build: cuda raises instead (tested in test_resolve_providers)")
    before = PROVIDER_FALLBACKS.labels(requested="cuda", used="CPUExecutionProvider")._value.get()
    with Session.from_path(scale_model, SessionConfig(provider="cuda")) as s:
        assert s.fell_back and s.providers == ("CPUExecutionProvider",)
        np.testing.assert_array_equal(s.run({"x": np.ones((1, 2), np.float32)})["y"], [[2.0, 2.0]])
    after = PROVIDER_FALLBACKS.labels(requested="cuda", used="CPUExecutionProvider")._value.get()
    assert after == before + 1
    assert any(f.requested == "cuda" for f in prov.fallbacks())
    with pytest.raises(ProviderUnavailableError, match="requested but ONNX Runtime loaded"):
        Session.from_path(scale_model, SessionConfig(provider="cuda", allow_fallback=False))


def test_probe_reports_cpu_and_explains_missing_accelerators() -> None:
    probe = prov.probe_providers()
    assert "CPUExecutionProvider" in probe.loadable
    for name in probe.available:
        assert (name in probe.loadable) != (name in probe.errors)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA_LOADS, reason="needs a loadable CUDAExecutionProvider")
def test_cuda_session_runs_on_gpu(scale_model: Path) -> None:
    with Session.from_path(scale_model, SessionConfig(provider="cuda", allow_fallback=False)) as s:
        assert s.providers[0] == "CUDAExecutionProvider"
        np.testing.assert_array_equal(s.run({"x": np.ones((1, 3), np.float32)})["y"], [[2.0] * 3])
