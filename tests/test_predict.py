"""Predict with a trained run: from files (any size and mode), folders, arrays and tensors, checked against
the run's own evaluation of the same weights; bad input named and skipped."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from woollylib import cli, main
from woollylib.predict import Predictor, UnreadableImage
from woollylib.recipe import Recipe


@pytest.fixture(scope="module")
def test_files(tiny_run, tmp_path_factory):
    """The run's 360 test images as lossless PNG files, named in test-set order."""
    _, result = tiny_run
    folder = tmp_path_factory.mktemp("images")
    for i, img in enumerate(result.data.test_source.images):
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    return folder


def test_predictions_from_files_equal_the_runs_own_evaluation(tiny_run, test_files):
    out, result = tiny_run
    p = Predictor.from_run(out, "last", "cpu")
    assert p.classes == result.data.classes and p.image_size == (32, 32)
    preds = p.predict(test_files, top_k=3)
    assert [pr.source.split("/")[-1] for pr in preds] == [f"{i:03d}.png" for i in range(360)]
    # oracle: the trained model on the run's own test loader (the normalisation of its data pipeline)
    model, data, _ = Recipe.from_run(out).load("last", "cpu")
    with torch.no_grad():
        probs = torch.cat([torch.softmax(model(x), 1) for x, _ in data.test_loader])
    assert [pr.index for pr in preds] == probs.argmax(1).tolist()
    ours = torch.tensor([[q for _, q in pr.top] for pr in preds])
    torch.testing.assert_close(ours, probs.topk(3, dim=1).values, atol=1e-5, rtol=0)
    accuracy = 100.0 * np.mean([pr.index == y for pr, y in zip(preds, result.data.test_source.labels)])
    assert accuracy == pytest.approx(json.loads((out / "metrics.json").read_text())["accuracy"], abs=1e-6)


def test_arrays_and_tensors_give_the_files_predictions(tiny_run, test_files):
    out, result = tiny_run
    p = Predictor.from_run(out, device="cpu")
    images = result.data.test_source.images[:20]
    from_files = [pr.index for pr in p.predict(sorted(test_files.glob("*.png"))[:20])]
    assert [pr.index for pr in p.predict(images)] == from_files                                   # uint8 NHWC
    assert [pr.index for pr in p.predict(torch.from_numpy(images).permute(0, 3, 1, 2) / 255.0)] == from_files
    assert p.predict(images[0])[0].index == from_files[0]                                         # one HWC image


def test_any_size_and_mode_is_predicted(tiny_run, tmp_path):
    out, result = tiny_run
    img = result.data.test_source.images[0]
    Image.fromarray(img[..., 0]).resize((20, 20)).save(tmp_path / "gray20.png")           # 20x20 grayscale
    Image.fromarray(img).convert("RGBA").save(tmp_path / "rgba.png")                      # RGBA
    Image.fromarray(img).resize((64, 48)).save(tmp_path / "photo.jpg", quality=90)        # JPEG, another size
    preds = main.predict(out, [tmp_path / "gray20.png", tmp_path / "rgba.png", tmp_path / "photo.jpg"], top_k=10)
    assert [pr.source.split("/")[-1] for pr in preds] == ["gray20.png", "rgba.png", "photo.jpg"]
    for pr in preds:
        assert pr.label in result.data.classes and len(pr.top) == 10
        assert sum(q for _, q in pr.top) == pytest.approx(1.0, abs=1e-5)
        assert [q for _, q in pr.top] == sorted((q for _, q in pr.top), reverse=True)
    assert preds[1].index == Predictor.from_run(out, device="cpu").predict(img)[0].index  # RGBA: its RGB


def test_the_cli_writes_csv_and_json_and_skips_unreadable_files(tiny_run, test_files, tmp_path, capsys):
    out, _ = tiny_run
    (tmp_path / "broken.png").write_text("not an image")
    files = [str(f) for f in sorted(test_files.glob("*.png"))[:3]]
    code = cli.main(["predict", str(out), *files, str(tmp_path / "broken.png"), "--top-k", "2", "--device", "cpu",
                     "--out", str(tmp_path / "p.csv")])
    text = capsys.readouterr()
    assert code == 2 and "broken.png: not an image PIL can read" in text.err
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert [r["source"] for r in rows] == files and all(len(r["top"].split()) == 2 for r in rows)
    assert cli.main(["predict", str(out), files[0], "--weights", "best", "--device", "cpu",
                     "--out", str(tmp_path / "p.json")]) == 0
    (only,) = json.loads((tmp_path / "p.json").read_text())
    assert only["source"] == files[0] and len(only["top"]) == 3
    assert cli.main(["predict", str(out), files[0], "--out", str(tmp_path / "p.txt")]) == 2
    assert ".csv or a .json" in capsys.readouterr().err


def test_bad_runs_and_inputs_say_what_is_wrong(tiny_run, tmp_path):
    out, _ = tiny_run
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        Predictor.from_run(tmp_path)
    (tmp_path / "nobest").mkdir()
    for name in ("config.json", "last.pt"):
        (tmp_path / "nobest" / name).write_bytes((out / name).read_bytes())
    with pytest.raises(FileNotFoundError, match=r"best.pt is missing.*pass --weights last"):
        Predictor.from_run(tmp_path / "nobest", "best")
    p = Predictor.from_run(tmp_path / "nobest", device="cpu")
    with pytest.raises(UnreadableImage, match="no such file"):
        p.predict([tmp_path / "missing.png"])
    errors = []
    assert p.predict([tmp_path / "missing.png"], errors=errors) == [] and "missing.png" in errors[0]
    with pytest.raises(TypeError, match="uint8"):
        p.predict(np.zeros((2, 32, 32, 3), dtype=np.int64))
    with pytest.raises(TypeError, match="classes=, mean= and std="):
        main.predict(p.model, np.zeros((32, 32, 3), dtype=np.uint8))
