"""woollylib.utils.metrics against direct computations on a tiny model and TensorDataset loaders."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from woollylib.utils import metrics

MEAN = (0.5, 0.4, 0.3)
STD = (0.2, 0.25, 0.3)
N, K = 53, 4  # 53 samples: the last batch of 8 is partial


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, K)

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3)))


@pytest.fixture()
def setup():
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(N, 3, 6, 5, generator=g)  # [0,1] pixel space, non-square to catch H/W swaps
    x = (pixels - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    y = torch.randint(0, K, (N,), generator=g)
    torch.manual_seed(1)
    model = Tiny().eval()
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)
    return model, loader, x, y, pixels


def test_predict_matches_direct_softmax(setup):
    model, loader, x, y, _ = setup
    p = metrics.predict(model, loader, "cpu")
    with torch.no_grad():
        direct = model(x).softmax(1)
    assert p.probs.shape == (N, K) and torch.equal(p.labels, y)
    torch.testing.assert_close(p.probs, direct)
    assert p.accuracy == pytest.approx(100 * (direct.argmax(1) == y).float().mean().item())


def test_predict_flip_tta_averages_logits_like_the_engine(setup):
    model, loader, x, _, _ = setup
    p = metrics.predict(model, loader, "cpu", tta_flip=True)
    with torch.no_grad():
        direct = ((model(x) + model(torch.flip(x, dims=[3]))) / 2).softmax(1)
    torch.testing.assert_close(p.probs, direct)
    from woollylib.bp.engine import evaluate

    assert p.accuracy == pytest.approx(evaluate(model, loader, device="cpu", tta_flip=True)["acc"])


def test_predict_restores_training_mode(setup):
    model, loader, *_ = setup
    model.train()
    metrics.predict(model, loader)
    assert model.training


def test_confusion_matrix_whole_loader_matches_loop(setup):
    model, loader, x, y, _ = setup
    cm = metrics.confusion_matrix(model, loader, "cpu")
    with torch.no_grad():
        pred = model(x).argmax(1)
    expected = np.zeros((K, K), dtype=np.int64)
    for t, p in zip(y.tolist(), pred.tolist()):
        expected[t, p] += 1
    assert cm.sum() == N
    np.testing.assert_array_equal(cm, expected)
    # the same from predictions, from (preds, labels), and per-class accuracy from it
    p = metrics.predict(model, loader)
    np.testing.assert_array_equal(metrics.confusion_matrix(p), expected)
    np.testing.assert_array_equal(metrics.confusion_matrix((pred, y), num_classes=K), expected)
    per_class = metrics.per_class_accuracy(cm)
    for k in range(K):
        mask = y == k
        assert per_class[k] == pytest.approx(100 * (pred[mask] == k).float().mean().item())
    np.testing.assert_allclose(metrics.per_class_accuracy(model, loader), per_class)


def test_per_class_accuracy_empty_class_is_nan():
    cm = np.array([[3, 1, 0], [0, 0, 0], [1, 0, 2]])
    acc = metrics.per_class_accuracy(cm)
    assert acc[0] == pytest.approx(75.0) and np.isnan(acc[1]) and acc[2] == pytest.approx(200 / 3)


def test_misclassified_are_wrong_and_denormalised(setup):
    model, loader, x, y, pixels = setup
    wrong = metrics.misclassified(model, loader, "cpu", mean=MEAN, std=STD)
    with torch.no_grad():
        probs = model(x).softmax(1)
    pred = probs.argmax(1)
    expected_idx = torch.nonzero(pred != y).flatten().numpy()
    assert len(expected_idx) > 0
    np.testing.assert_array_equal(wrong.indices, expected_idx)
    np.testing.assert_array_equal(wrong.true, y[expected_idx].numpy())
    np.testing.assert_array_equal(wrong.pred, pred[expected_idx].numpy())
    assert (wrong.true != wrong.pred).all()
    np.testing.assert_allclose(wrong.confidence, probs.max(1).values[expected_idx].numpy(), rtol=1e-6)
    # pixel space HWC equals the original [0,1] pixels; inputs are the normalised model inputs
    assert wrong.images.shape == (len(expected_idx), 6, 5, 3)
    np.testing.assert_allclose(wrong.images, pixels[expected_idx].permute(0, 2, 3, 1).numpy(), atol=1e-6)
    torch.testing.assert_close(wrong.inputs, x[expected_idx])
    with torch.no_grad():
        assert (model(wrong.inputs).argmax(1).numpy() == wrong.pred).all()


def test_misclassified_limit_and_bundle(setup):
    model, loader, _x, _y, _ = setup
    full = metrics.misclassified(model, loader, mean=MEAN, std=STD)
    some = metrics.misclassified(model, loader, mean=MEAN, std=STD, limit=3)
    assert len(some) == 3
    np.testing.assert_array_equal(some.indices, full.indices[:3])
    assert len(metrics.misclassified(model, loader, mean=MEAN, std=STD, limit=0)) == 0

    class Bundle:  # duck-typed DataBundle
        test_loader = loader
        mean, std, classes = MEAN, STD, ["a", "b", "c", "d"]

    via_bundle = metrics.misclassified(model, Bundle(), limit=2)
    np.testing.assert_array_equal(via_bundle.indices, full.indices[:2])
    assert via_bundle.classes == ["a", "b", "c", "d"]
    assert via_bundle.titles()[0].startswith(Bundle.classes[via_bundle.true[0]])


def test_summary_is_json_and_consistent(setup):
    import json

    model, loader, *_ = setup
    s = metrics.summary(model, loader, classes=["a", "b", "c", "d"])
    json.dumps(s)
    cm = np.array(s["confusion_matrix"])
    assert cm.sum() == N == s["samples"]
    assert s["accuracy"] == pytest.approx(100 * np.trace(cm) / N)


def test_bad_inputs(setup):
    model, loader, *_ = setup
    with pytest.raises(ValueError, match="mean= and std="):
        metrics.misclassified(model, loader)
    with pytest.raises(ValueError, match="loader="):
        metrics.confusion_matrix(model)
    with pytest.raises(TypeError, match=r"\(images, labels\)"):
        metrics.predict(model, [torch.zeros(2, 3, 4, 4)])
    with pytest.raises(ValueError, match="limit"):
        metrics.misclassified(model, loader, mean=MEAN, std=STD, limit=-1)
