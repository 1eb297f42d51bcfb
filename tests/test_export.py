"""Export a trained run as ONNX, TorchScript or a .pt bundle: every format's outputs equal PyTorch's on the
run's test images (onnxruntime for ONNX), load_model round-trips, and a failing check writes nothing."""

import json
import warnings

import numpy as np
import pytest
import torch

import woollylib
from woollylib import cli
from woollylib import export as ex
from woollylib.predict import Predictor


def _reference(out, images):
    p = Predictor.from_run(out, device="cpu")
    with torch.no_grad():
        return p, p.model(p.prepare(images)).numpy()


def test_onnx_matches_pytorch_at_any_batch_size(tiny_run):
    ort = pytest.importorskip("onnxruntime", reason="the export extra (pip install 'woollylib[export]') is needed")
    out, result = tiny_run
    path = ex.export(out, "onnx", verbose=False)
    assert path == out / "model.onnx" and not list(out.glob(".*.tmp*"))
    images = result.data.test_source.images[100:133]  # other images than the check's first 64
    p, logits = _reference(out, images)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": p.prepare(images).numpy()})[0]
    assert got.shape == (33, 10) and np.abs(got - logits).max() <= ex.ATOL


def test_torchscript_matches_pytorch(tiny_run, tmp_path):
    out, result = tiny_run
    path = ex.export(out, "torchscript", tmp_path / "m.ts.pt", weights="best", verbose=False)
    images = result.data.test_source.images[:9]
    p = Predictor.from_run(out, "best", "cpu")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation note
        want = p.model(p.prepare(images))
        got = torch.jit.load(str(path)).eval()(p.prepare(images))
    assert (got - want).abs().max().item() <= ex.ATOL


def test_pt_bundle_round_trips_through_load_model(tiny_run, tmp_path):
    out, result = tiny_run
    path = ex.export(out, "pt", tmp_path / "digits.pt", verbose=False)
    model = woollylib.load_model(path, "cpu")
    assert not model.training and model.classes == result.data.classes and model.image_size == (32, 32)
    assert model.mean == pytest.approx(result.data.mean) and model.std == pytest.approx(result.data.std)
    reference = Predictor.from_run(out, device="cpu")
    images = result.data.test_source.images[:50]
    assert [pr.index for pr in model.predict(images)] == [pr.index for pr in reference.predict(images)]
    for a, b in zip(model.state_dict().values(), reference.model.state_dict().values()):
        assert torch.equal(a, b)
    bundle = torch.load(path, weights_only=True)  # plain tensors and JSON-able values: loads without pickle code
    assert bundle["format"] == "woollylib-model" and bundle["spec"]["name"] == "compact"
    assert bundle["config"] == json.loads((out / "config.json").read_text())


def test_a_failing_check_writes_nothing_and_keeps_the_old_file(tiny_run, tmp_path, monkeypatch):
    out, _ = tiny_run
    target = tmp_path / "model.pt"
    target.write_bytes(b"the user's old export")
    monkeypatch.setattr(ex, "ATOL", -1.0)  # no export can pass: the check must refuse
    with pytest.raises(ex.ExportCheckError, match="nothing was written"):
        ex.export(out, "pt", target, verbose=False)
    assert target.read_bytes() == b"the user's old export" and sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_the_cli_exports_and_names_what_is_wrong(tiny_run, tmp_path, capsys):
    out, _ = tiny_run
    assert cli.main(["export", str(out), "--format", "pt", "--out", str(tmp_path / "m.pt")]) == 0
    assert "checked on 64 images" in capsys.readouterr().out
    assert cli.main(["export", str(tmp_path / "nowhere")]) == 2
    assert "config.json is missing" in capsys.readouterr().err
    assert cli.main(["export", str(out), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a woollylib model file"):
        woollylib.load_model(tmp_path / "junk.pt")
    torch.save({"model": {}}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a woollylib model bundle"):
        woollylib.load_model(tmp_path / "plain.pt")
