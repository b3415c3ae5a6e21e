"""The image evaluator and its protocol: feature extractors, the cached real reference,
scores inside a training run, and re-scoring a finished run with `python -m ganlab.evaluate`."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import ganlab.evaluate.features as features
import ganlab.evaluate.inception as inception
from ganlab.config import ConfigError
from ganlab.data import build_data, load_split
from ganlab.data.images import to_signed_unit
from ganlab.evaluate import ImageEvaluator, build_evaluator
from ganlab.evaluate.__main__ import main as evaluate_main
from ganlab.evaluate.image_metrics import fid
from ganlab.evaluate.reference import RealReference
from ganlab.train import run
from tests.helpers import run_here, write_fake_fashion
from tests.test_metrics import brute_force_pr, numpy_kid

CPU = torch.device("cpu")
EVAL_KEYS = ("eval/fid", "eval/is", "eval/is_std", "eval/kid", "eval/kid_std",
             "eval/precision", "eval/recall")
PROTOCOL_KEYS = ("features", "extractor_sha256", "real_split", "real_num_samples",
                 "num_samples", "final_num_samples", "preprocessing", "g_mode", "ema")
TINY_RUN = ["train.steps=4", "train.batch_size=8", "eval.every=2", "eval.num_samples=64",
            "eval.final_num_samples=128", "model.g_width=8", "model.d_width=8",
            "eval.grid_size=16"]
HAS_TORCH_FIDELITY = importlib.util.find_spec("torch_fidelity") is not None


@pytest.fixture(scope="module")
def fashion_root(tmp_path_factory) -> Path:
    return write_fake_fashion(tmp_path_factory.mktemp("fashion"))


@pytest.fixture
def fashion_cfg(make_cfg, fashion_root):
    def _make(*overrides: str):
        return make_cfg("data=fashion_mnist", "model=dcgan", f"data.root={fashion_root}",
                        "data.download=false", "eval.classifier_epochs=1", *overrides)

    return _make


def evaluator_for(cfg):
    return build_evaluator(cfg, build_data(cfg.data, 0, CPU), CPU)


def stable_fid(x: np.ndarray, y: np.ndarray) -> float:
    """FID with Tr (S1 S2)^(1/2) = Tr (S1^(1/2) S2 S1^(1/2))^(1/2), through symmetric
    eigendecompositions only: exact also for the singular covariances of small classes."""
    s1, s2 = np.cov(x, rowvar=False, ddof=1), np.cov(y, rowvar=False, ddof=1)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(w.clip(min=0))) @ v.T
    cross = np.sqrt(np.linalg.eigvalsh(root1 @ s2 @ root1).clip(min=0)).sum()
    return float(((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2)
                 - 2 * cross)


def numpy_is(logits: np.ndarray) -> float:
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return float(np.exp((p * (np.log(p) - np.log(p.mean(0)))).sum(1).mean()))


def random_images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# -- the classifier extractor and the cached reference ----------------------------------------
def test_second_build_loads_classifier_and_reference_from_the_cache(fashion_cfg, monkeypatch,
                                                                    tmp_path):
    monkeypatch.setenv("GANLAB_CACHE", str(tmp_path / "cache"))  # a cold cache
    calls = {"train": 0, "reference": 0}
    train, compute = features.train_classifier, RealReference.compute

    def spy_train(*args, **kwargs):
        calls["train"] += 1
        return train(*args, **kwargs)

    def spy_compute(*args, **kwargs):
        calls["reference"] += 1
        return compute(*args, **kwargs)

    monkeypatch.setattr(features, "train_classifier", spy_train)
    monkeypatch.setattr(RealReference, "compute", staticmethod(spy_compute))
    cfg = fashion_cfg()
    first = evaluator_for(cfg)
    assert isinstance(first, ImageEvaluator)
    assert calls == {"train": 1, "reference": 1}
    # the next run of a sweep: both from the cache
    second = evaluator_for(cfg)
    assert calls == {"train": 1, "reference": 1}
    assert second.extractor.sha256 == first.extractor.sha256
    assert torch.equal(second.reference.features, first.reference.features)
    assert len(list((tmp_path / "cache" / "extractors").glob("*.pt"))) == 1
    assert len(list((tmp_path / "cache" / "refstats").glob("*.pt"))) == 1
    # another reference split: a new real side, the same classifier
    evaluator_for(fashion_cfg("eval.real_split=train"))
    assert calls == {"train": 1, "reference": 2}


def test_classifier_is_deterministic_and_its_hash_is_of_its_weights(fashion_cfg, monkeypatch,
                                                                     tmp_path):
    monkeypatch.setenv("GANLAB_CACHE", str(tmp_path / "a"))
    a = evaluator_for(fashion_cfg())
    monkeypatch.setenv("GANLAB_CACHE", str(tmp_path / "b"))  # rebuilt from scratch
    b = evaluator_for(fashion_cfg())
    assert a.extractor.sha256 == b.extractor.sha256
    assert torch.equal(a.reference.features, b.reference.features)
    # the hash: sha256 over the saved state dict's tensors, in order
    (path,) = (tmp_path / "b" / "extractors").glob("*.pt")
    digest = hashlib.sha256()
    for t in torch.load(path, weights_only=True)["state_dict"].values():
        digest.update(t.contiguous().numpy().tobytes())
    assert b.extractor.sha256 == digest.hexdigest()
    # other weights, another hash
    c = evaluator_for(fashion_cfg("eval.classifier_epochs=2"))
    assert c.extractor.sha256 != a.extractor.sha256


def test_reference_is_the_seed0_permutation_of_the_real_split(fashion_cfg):
    cfg = fashion_cfg("eval.real_num_samples=100")
    ev = evaluator_for(cfg)
    images, labels = load_split(cfg.data, "test")
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:100]
    feats, logits = ev.extractor(to_signed_unit(images[idx]))
    assert ev.reference.count == 100
    assert torch.equal(ev.reference.labels, labels[idx])
    assert torch.allclose(ev.reference.features, feats, rtol=0, atol=1e-6)
    assert torch.allclose(ev.reference.logits, logits, rtol=0, atol=1e-6)


def test_protocol_declares_extractor_reference_and_sample_counts(fashion_cfg):
    cfg = fashion_cfg("eval.num_samples=64", "eval.final_num_samples=128")
    ev = evaluator_for(cfg)
    p = ev.protocol()
    assert set(PROTOCOL_KEYS) <= set(p)
    assert p["features"] == "classifier"
    assert p["extractor_sha256"] == ev.extractor.sha256 and len(p["extractor_sha256"]) == 64
    assert p["real_split"] == "test"
    # the fake test split has 256 images, fewer than the 10000 asked for: all of them
    assert p["real_num_samples"] == 256 == len(ev.reference.labels)
    assert (p["num_samples"], p["final_num_samples"]) == (64, 128)
    assert (ev.num_samples(final=False), ev.num_samples(final=True)) == (64, 128)
    assert p["preprocessing"] == "[-1, 1] float, 1x28x28, no resize"
    assert (p["g_mode"], p["ema"]) == ("eval", False)
    assert 0 <= p["extractor_test_accuracy"] <= 1
    json.dumps(p)  # goes into result.json as it is


@pytest.mark.filterwarnings("ignore:std\\(\\):UserWarning")
def test_scores_of_random_images_match_independent_computations(fashion_cfg):
    # one IS split and one KID subset holding every point: nothing random left to match
    ev = evaluator_for(fashion_cfg("eval.is_splits=1", "eval.kid_subsets=1",
                                   "eval.kid_subset_size=256"))
    samples = random_images(256)
    m = ev(samples)
    assert set(m) == set(EVAL_KEYS)
    # (eval/is_std of a single split is the sample std of one value: undefined)
    assert all(math.isfinite(v) for k, v in m.items() if k != "eval/is_std")
    feats, logits = (t.numpy() for t in ev.extractor(samples))
    real = ev.reference.features.numpy()
    assert m["eval/fid"] == pytest.approx(stable_fid(real, feats), rel=1e-6)
    assert m["eval/is"] == pytest.approx(numpy_is(logits), rel=1e-9)
    assert m["eval/kid"] == pytest.approx(numpy_kid(real, feats), rel=1e-6)
    # distances are float32 (matmul form, ~1e-5 relative error): a point within that of a
    # ball's edge may fall on the other side, so allow one point of 256
    assert (m["eval/precision"], m["eval/recall"]) == pytest.approx(
        brute_force_pr(real, feats, k=3), abs=1 / 256 + 1e-9)


def test_labels_add_a_per_class_fid(fashion_cfg):
    ev = evaluator_for(fashion_cfg())
    samples = random_images(64, seed=1)
    assert not any(k.startswith("eval/fid_class/") for k in ev(samples))
    labels = torch.arange(64) % 10
    labels[labels == 9] = 8
    labels[0] = 9  # one sample of class 9: too few for a covariance, so no score
    m = ev(samples, labels)
    assert all(math.isfinite(v) for v in m.values())
    assert {k for k in m if k.startswith("eval/fid_class/")} == {
        f"eval/fid_class/{c}" for c in range(9)}
    feats = ev.extractor(samples)[0].numpy()
    real, real_labels = ev.reference.features.numpy(), ev.reference.labels.numpy()
    for c in range(9):
        # each class against the real images of that class (rank-deficient covariances)
        expected = stable_fid(real[real_labels == c], feats[labels.numpy() == c])
        assert m[f"eval/fid_class/{c}"] == pytest.approx(expected, rel=1e-4)


# -- InceptionV3 ---------------------------------------------------------------------------------
def test_inception_without_torch_fidelity_says_how_to_get_it(fashion_cfg, monkeypatch):
    if HAS_TORCH_FIDELITY:
        pytest.skip("torch-fidelity is installed here")
    monkeypatch.setattr(features, "train_classifier", None)  # no silent fallback
    with pytest.raises(ConfigError) as err:
        evaluator_for(fashion_cfg("eval.features=inception"))
    msg = str(err.value)
    for needle in ("eval.inception_weights", "torch-fidelity", "eval.features=classifier",
                   "import failed"):
        assert needle in msg


def test_inception_weights_that_are_not_a_file(fashion_cfg, tmp_path):
    missing = tmp_path / "nowhere" / "weights-inception.pth"
    with pytest.raises(ConfigError) as err:
        evaluator_for(fashion_cfg("eval.features=inception", f"eval.inception_weights={missing}"))
    msg = str(err.value)
    assert "eval.inception_weights" in msg and "eval.features=classifier" in msg
    if HAS_TORCH_FIDELITY:
        assert f"eval.inception_weights={str(missing)!r} is not a file" in msg
    else:  # the missing package is reported first
        assert "import failed" in msg and "torch-fidelity" in msg


class _FakeInception(nn.Module):
    """Stands in for torchmetrics' InceptionV3: records its input and, like its
    `_torch_fidelity_forward`, returns one tensor per requested feature (features, logits)."""

    def _torch_fidelity_forward(self, u8: torch.Tensor):
        self.seen = u8
        flat = u8.double().flatten(1)
        return flat.mean(1, keepdim=True).expand(-1, 2048), flat[:, :1008]


def test_inception_wrapper_feeds_uint8_rgb():
    fake = _FakeInception()
    net = inception._InceptionNet(fake)
    x = random_images(3)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = -1.5, 1.5  # out of range: clamped
    feats, logits = net(x)
    assert fake.seen.dtype == torch.uint8 and fake.seen.shape == (3, 3, 28, 28)
    expected = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    for ch in range(3):  # grey repeated into R, G and B
        assert torch.equal(fake.seen[:, ch], expected[:, 0])
    assert fake.seen[0, 0, 0, 0] == 0 and fake.seen[0, 0, 0, 1] == 255
    assert feats.shape == (3, 2048) and logits.shape == (3, 1008)




def test_inception_wrapper_through_torchmetrics_forward():
    from torchmetrics.image.fid import NoTrainInceptionV3

    # torchmetrics' own forward around a stand-in for torch-fidelity's network body
    inner = NoTrainInceptionV3.__new__(NoTrainInceptionV3)
    nn.Module.__init__(inner)
    inner.features_list = ["2048", "logits_unbiased"]
    inner._torch_fidelity_forward = lambda u8: (torch.ones(len(u8), 2048),
                                                torch.zeros(len(u8), 1008))
    feats, logits = inception._InceptionNet(inner)(random_images(3))
    assert feats.shape == (3, 2048) and logits.shape == (3, 1008)


def test_load_inception_with_stand_in_weights(monkeypatch):
    tfi = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    # random weights stand in for the real ones (no download, no file)
    monkeypatch.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: {})
    monkeypatch.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict",
                        lambda self, *a, **k: None)
    torch.manual_seed(0)
    extractor = inception.load_inception(None, CPU)
    assert extractor.name == "inception" and len(extractor.sha256) == 64
    feats, logits = extractor(random_images(3), batch_size=2)  # grey, (N, 1, 28, 28)
    assert feats.shape == (3, 2048) and logits.shape == (3, 1008)
    assert feats.dtype == logits.dtype == torch.float64
    assert torch.isfinite(feats).all() and torch.isfinite(logits).all()


# -- inside a training run -----------------------------------------------------------------------
def test_training_run_records_scores_and_protocol(fashion_cfg, tmp_path):
    cfg = fashion_cfg(*TINY_RUN)
    result = run(cfg, tmp_path / "run")
    assert result["status"] == "completed", result["error"]
    assert [(h["step"], h["num_samples"]) for h in result["history"]] == [(2, 64), (4, 128)]
    for entry in result["history"]:
        assert set(EVAL_KEYS) <= set(entry["metrics"])
        assert all(math.isfinite(entry["metrics"][k]) for k in EVAL_KEYS)
    assert result["metrics"] == result["history"][-1]["metrics"]
    on_disk = json.loads((tmp_path / "run" / "result.json").read_text())
    assert on_disk["metrics"] == result["metrics"]
    # the protocol the scores were computed under, with the extractor's weights hash
    protocol = on_disk["comparability"]["eval"]
    assert protocol == json.loads(json.dumps(evaluator_for(cfg).protocol()))
    assert (protocol["num_samples"], protocol["final_num_samples"]) == (64, 128)


def test_conditional_run_scores_every_class(fashion_cfg, tmp_path):
    result = run(fashion_cfg(*TINY_RUN, "labels=conditional"), tmp_path / "run")
    assert result["status"] == "completed", result["error"]
    per_class = {k for k in result["metrics"] if k.startswith("eval/fid_class/")}
    # 128 samples asked for class by class: 12 or 13 of each of the 10 classes
    assert per_class == {f"eval/fid_class/{c}" for c in range(10)}
    assert all(math.isfinite(result["metrics"][k]) and result["metrics"][k] >= 0
               for k in per_class)


# -- re-scoring a finished run ---------------------------------------------------------------------
@pytest.fixture
def finished_run(fashion_cfg, tmp_path) -> Path:
    run_dir = tmp_path / "run"
    assert run(fashion_cfg(*TINY_RUN), run_dir)["status"] == "completed"
    return run_dir


def _snapshot(run_dir: Path) -> tuple[dict, bytes, int]:
    ckpt = run_dir / "checkpoints" / "last.pt"
    return (json.loads((run_dir / "result.json").read_text()), ckpt.read_bytes(),
            ckpt.stat().st_mtime_ns)


def test_rescore_cli_updates_eval_metrics_without_retraining(finished_run):
    before, ckpt, mtime = _snapshot(finished_run)
    out = run_here(str(finished_run), "eval.num_samples=200", module="ganlab.evaluate")
    assert out.returncode == 0, out.stderr
    after, ckpt_after, mtime_after = _snapshot(finished_run)
    assert (ckpt_after, mtime_after) == (ckpt, mtime)  # nothing trained, nothing saved
    old, new = before["metrics"], after["metrics"]
    assert {k: v for k, v in new.items() if k.startswith("train/")} == {
        k: v for k, v in old.items() if k.startswith("train/")} != {}
    assert {k for k in new if k.startswith("eval/")} == {k for k in old if k.startswith("eval/")}
    assert new["eval/fid"] != old["eval/fid"]  # 200 samples, not the run's 128
    protocol = after["comparability"]["eval"]
    assert (protocol["num_samples"], protocol["final_num_samples"]) == (200, 200)
    assert protocol == {**before["comparability"]["eval"], "num_samples": 200,
                        "final_num_samples": 200}
    assert after["history"] == before["history"]
    assert (after["step"], after["status"]) == (4, "completed")
    assert (finished_run / "samples" / "evaluate_step_0000004.png").exists()


def test_rescore_under_the_run_protocol_reproduces_its_final_scores(finished_run):
    before = json.loads((finished_run / "result.json").read_text())
    # same G, same evaluation seed for step 4, same 128 samples: the same numbers
    assert evaluate_main([str(finished_run), "eval.num_samples=128"]) == 0
    after = json.loads((finished_run / "result.json").read_text())
    assert after["metrics"] == before["metrics"]
    # the override sets both sample counts; the rest of the protocol is the run's
    protocol, old = after["comparability"]["eval"], before["comparability"]["eval"]
    assert protocol == {**old, "num_samples": 128}


def test_rescore_refuses_other_keys_and_non_runs(finished_run, tmp_path, capsys):
    before = (finished_run / "result.json").read_bytes()
    out = run_here(str(finished_run), "eval.num_samples=200", "train.lr_d=1",
                  module="ganlab.evaluate")
    assert out.returncode == 2
    assert "ganlab.evaluate: train.lr_d=1: only evaluation, schedule and infrastructure" in out.stderr
    assert (finished_run / "result.json").read_bytes() == before
    # the same entry point in this process (a CLI start costs seconds): not runs
    empty = tmp_path / "empty"
    empty.mkdir()
    assert evaluate_main([str(empty), "eval.num_samples=200"]) == 2
    assert f"{empty} has no result.json" in capsys.readouterr().err
    # a copy of the run without its saved config is not a run either
    shutil.copytree(finished_run, tmp_path / "no_config")
    shutil.rmtree(tmp_path / "no_config" / ".hydra")
    assert evaluate_main([str(tmp_path / "no_config")]) == 2
    assert "has no saved config" in capsys.readouterr().err


def test_failed_rescore_leaves_result_json_as_it_was(finished_run):
    (finished_run / "checkpoints" / "last.pt").unlink()
    before = json.loads((finished_run / "result.json").read_text())
    assert evaluate_main([str(finished_run), "eval.num_samples=200"]) == 2
    after = json.loads((finished_run / "result.json").read_text())
    assert after["metrics"] == before["metrics"]
    assert after["comparability"] == before["comparability"]


def test_rescore_with_a_misspelt_eval_key_exits_2(finished_run, capsys):
    assert evaluate_main([str(finished_run), "eval.num_sample=200"]) == 2
    assert "eval.num_sample" in capsys.readouterr().err


# -- real MNIST ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_classifier_features_on_real_mnist(make_cfg, mnist_root):
    # trains the classifier on the 60000 MNIST training images (once per cache)
    cfg = make_cfg("data=mnist", "model=dcgan", f"data.root={mnist_root}", "data.download=false")
    ev = evaluator_for(cfg)
    accuracy = ev.extractor.info["extractor_test_accuracy"]
    assert accuracy >= 0.99
    # the recorded accuracy is that of the reference logits: the whole test split
    ref = ev.reference
    assert ref.count == 10000
    assert float((ref.logits.argmax(1) == ref.labels).double().mean()) == pytest.approx(
        accuracy, abs=1e-5)
    train, _ = load_split(cfg.data, "train")
    real_feats = ev.extractor(to_signed_unit(train[:2000]))[0]
    noise_feats = ev.extractor(random_images(2000))[0]
    near, far = fid(ref.features, real_feats), fid(ref.features, noise_feats)
    assert near < 0.02 * far, (near, far)
