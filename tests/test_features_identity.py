"""One feature extractor for everyone: the MNIST classifier's weights ship with the package
and are checked on load; training, feature extraction and scores give the same bits at any
torch thread setting."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import ganlab.evaluate.features as features
from ganlab.checkpoint import CheckpointError
from ganlab.data import load_split
from ganlab.data.images import load_idx_dataset
from ganlab.evaluate import FEATURES, ImageEvaluator, protocol_settings
from ganlab.evaluate.reference import RealReference
from tests.helpers import REPO, write_idx

CPU = torch.device("cpu")
WEIGHTS, RECORD = features.committed_paths("mnist")


def record() -> dict:
    return json.loads(RECORD.read_text())


@pytest.fixture
def threads():
    """Set torch's thread count inside a test; the session's setting restored after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def write_fake_mnist(root: Path, n_train: int, n_test: int = 256, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    return root


# -- the committed weights ------------------------------------------------------------------------
def test_committed_weights_match_their_record():
    saved = record()
    state = torch.load(WEIGHTS, weights_only=True)
    # the record's hash: sha256 over the state dict's tensor bytes, in order
    digest = hashlib.sha256()
    for t in state.values():
        digest.update(t.contiguous().numpy().tobytes())
    assert saved["sha256"] == digest.hexdigest() == features.tensor_sha256(state.values())
    # fp32 weights (batch norm's step counters aside), small enough to live in the repository
    assert {t.dtype for k, t in state.items() if not k.endswith("num_batches_tracked")} == {
        torch.float32}
    assert WEIGHTS.stat().st_size < 1_000_000
    # made by the default recipe, which scoring asks for, and a good classifier
    assert features.ClassifierRecipe(**saved["recipe"]) == features.ClassifierRecipe("mnist")
    assert saved["test_accuracy"] >= 0.99
    assert len(saved["train_data_sha256"]) == 64
    assert (saved["num_classes"], saved["shape"]) == (10, [1, 28, 28])


def test_committed_weights_are_package_data():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["ganlab"]
    for path in (WEIGHTS, RECORD):
        inside = path.relative_to(REPO / "ganlab").as_posix()
        assert any(fnmatch.fnmatch(inside, pattern) for pattern in package_data), inside
    assert WEIGHTS.parent == Path(features.__file__).resolve().parent / "weights"


def test_mnist_scoring_uses_the_committed_weights(make_cfg, monkeypatch, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("GANLAB_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)  # not found through the working directory

    def no_training(*args, **kwargs):
        raise AssertionError("trained a classifier")

    monkeypatch.setattr(features, "train_classifier", no_training)
    # no data either: the root holds nothing, and nothing may be downloaded
    cfg = make_cfg("data=mnist", f"data.root={tmp_path / 'no_data'}", "data.download=false")
    extractor = FEATURES.choose("classifier")(cfg, CPU)
    saved = record()
    assert extractor.sha256 == saved["sha256"]
    assert extractor.protocol()["extractor_sha256"] == saved["sha256"]
    assert extractor.info["extractor_test_accuracy"] == round(saved["test_accuracy"], 5)
    assert list(cache.iterdir()) == []  # nothing written to the cache
    assert not (tmp_path / "no_data").exists()


def test_another_recipe_trains_its_own_classifier(make_cfg, monkeypatch, tmp_path):
    monkeypatch.setenv("GANLAB_CACHE", str(tmp_path / "cache"))
    root = write_fake_mnist(tmp_path / "data", n_train=256)
    cfg = make_cfg("data=mnist", f"data.root={root}", "data.download=false",
                   "eval.classifier_epochs=1")
    extractor = FEATURES.choose("classifier")(cfg, CPU)
    assert extractor.sha256 != record()["sha256"]
    assert len(list((tmp_path / "cache" / "extractors").glob("classifier_mnist_*.pt"))) == 1


def _damage_weights(weights: Path, record_path: Path) -> None:
    state = torch.load(weights, weights_only=True)
    first = next(iter(state))
    state[first] = state[first].clone()
    state[first].view(-1)[0] += 1e-3
    torch.save(state, weights)


def _truncate_weights(weights: Path, record_path: Path) -> None:
    weights.write_bytes(weights.read_bytes()[:1000])


def _edit_record(weights: Path, record_path: Path) -> None:
    saved = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**saved, "sha256": "0" * 64}))


def _drop_record(weights: Path, record_path: Path) -> None:
    record_path.unlink()


def _drop_both(weights: Path, record_path: Path) -> None:  # e.g. installed without them
    weights.unlink()
    record_path.unlink()


@pytest.mark.parametrize("damage, says", [
    (_damage_weights, "does not match classifier_mnist.json"),
    (_edit_record, "does not match classifier_mnist.json"),
    (_truncate_weights, "cannot be loaded"),
    (_drop_record, "is missing or damaged"),
    (_drop_both, "is missing or damaged"),
])
def test_damaged_committed_weights_say_which_file_and_how_to_regenerate(
        damage, says, monkeypatch, tmp_path):
    copy = tmp_path / "weights"
    shutil.copytree(WEIGHTS.parent, copy)
    monkeypatch.setattr(features, "WEIGHTS_DIR", copy)
    monkeypatch.setattr(features, "train_classifier", None)  # never a silent retraining
    weights, record_path = features.committed_paths("mnist")
    damage(weights, record_path)
    with pytest.raises(CheckpointError) as err:
        features.load_or_train_classifier(features.ClassifierRecipe("mnist"), None, CPU)
    msg = str(err.value)
    assert says in msg
    assert str(record_path if damage in (_drop_record, _drop_both) else weights) in msg
    assert "make classifier" in msg
    assert "python -m ganlab.evaluate.features train-classifier --dataset mnist" in msg


# -- the same bits at any thread setting -----------------------------------------------------------
def test_scores_are_bit_identical_at_1_and_2_threads(make_cfg, mnist_root, threads):
    cfg = make_cfg("data=mnist", "model=dcgan", f"data.root={mnist_root}",
                   "data.download=false", "eval.kid_subsets=10")
    test_images, test_labels = load_split(cfg.data, "test")
    train_images, _ = load_split(cfg.data, "train")
    # fixed "generated" images: training digits under fixed noise
    noise = torch.randn(1000, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    samples = (train_images[:1000].float() / 127.5 - 1 + 0.5 * noise).clamp(-1, 1)
    labels = torch.arange(1000) % 10
    scores, feats = {}, {}
    for n in (1, 2):
        threads(n)
        extractor = FEATURES.choose("classifier")(cfg, CPU)
        real = RealReference.compute(test_images, test_labels, 1000, extractor)
        reference = RealReference("test", 1000, real["features"], real["logits"],
                                  real["labels"])
        evaluator = ImageEvaluator(extractor, reference, cfg.eval, protocol_settings(cfg))
        feats[n] = extractor(samples)
        scores[n] = evaluator(samples, labels)
        assert torch.get_num_threads() == n  # the caller's setting, as it was
    assert torch.equal(feats[1][0], feats[2][0]) and torch.equal(feats[1][1], feats[2][1])
    assert {"eval/fid", "eval/is", "eval/kid", "eval/fid_class/0"} <= set(scores[1])
    assert scores[1] == scores[2]  # exactly


def test_training_command_gives_the_same_weights_at_1_and_2_caller_threads(
        tmp_path, threads, capsys):
    # a reduced recipe: 512 images, one epoch (four steps); enough for two threads to round
    # differently from one when training is left to the caller's setting
    root = write_fake_mnist(tmp_path / "data", n_train=512)
    out = {}
    for n in (1, 2):
        threads(n)
        out[n] = tmp_path / f"threads{n}" / "classifier_mnist.pt"
        assert features.main(["train-classifier", "--dataset", "mnist", "--data-root",
                              str(root), "--out", str(out[n]), "--epochs", "1"]) == 0
        assert torch.get_num_threads() == n  # restored
    one, two = (json.loads(out[n].with_suffix(".json").read_text()) for n in (1, 2))
    assert one["sha256"] == two["sha256"]
    assert one == two
    assert out[1].read_bytes() == out[2].read_bytes()
    assert one["sha256"] == features.tensor_sha256(
        torch.load(out[1], weights_only=True).values())
    assert one["recipe"] == features.ClassifierRecipe("mnist", epochs=1).__dict__
    assert one["train_data_sha256"] == features.tensor_sha256(
        load_idx_dataset("mnist", str(root), "train", download=False))
    # retraining with another recipe is a new identity, and the command says so
    capsys.readouterr()
    assert features.main(["train-classifier", "--dataset", "mnist", "--data-root", str(root),
                          "--out", str(out[1]), "--epochs", "2"]) == 0
    assert "a new extractor identity" in capsys.readouterr().out
    assert json.loads(out[1].with_suffix(".json").read_text())["sha256"] != one["sha256"]


def test_training_command_refuses_2d_data(capsys, tmp_path):
    assert features.main(["train-classifier", "--dataset", "ring8",
                          "--out", str(tmp_path / "c.pt")]) == 2
    assert "--dataset ring8: not an image dataset" in capsys.readouterr().err
    assert not (tmp_path / "c.pt").exists()
