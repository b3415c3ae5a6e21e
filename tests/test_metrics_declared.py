"""Metrics declare themselves: every evaluator names the keys it returns, each key has its
entry in ganlab.metrics (direction, scale, range), and an evaluator returns only what it
declares. A metric added to an evaluator but forgotten in the registry fails here instead
of being silently never compared."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from ganlab.evaluate import EVALUATORS, ImageEvaluator, build_evaluator
from ganlab.evaluate.score import SCORE_KEYS
from ganlab.metrics import metric_info, registered


@pytest.mark.parametrize("evaluator", EVALUATORS, ids=lambda e: e.__name__)
def test_every_declared_key_has_a_registry_entry(evaluator):
    for key in [*evaluator.keys, *SCORE_KEYS]:
        assert registered(key.replace("<k>", "3")), f"{evaluator.__name__}: {key} has no entry"
        info = metric_info(key.replace("<k>", "3"))
        assert info.direction != 0 or key.endswith("_std"), key


def test_an_unregistered_key_is_caught():
    assert not registered("eval/sharpness")
    assert registered("eval/fid_class/7") and registered("eval/kid_std")


def test_a_2d_evaluator_returns_what_it_declares(make_cfg):
    from ganlab.assemble import build_gan

    cfg = make_cfg("eval.num_samples=200")
    gan = build_gan(cfg, torch.device("cpu"))
    evaluator = build_evaluator(cfg, gan.data, torch.device("cpu"))
    samples = gan.generate(200, torch.Generator().manual_seed(0), 100)
    assert set(evaluator(samples)) == set(evaluator.keys)


def test_an_image_evaluator_returns_what_it_declares():
    gen = torch.Generator().manual_seed(0)
    feats, ref = torch.randn(60, 8, generator=gen), torch.randn(60, 8, generator=gen)
    logits = torch.randn(60, 3, generator=gen)
    labels = torch.arange(60) % 3
    reference = SimpleNamespace(features=ref.double(), labels=labels, split="test", count=60)
    cfg = SimpleNamespace(is_splits=2, kid_subsets=5, kid_subset_size=20, pr_k=3)
    evaluator = ImageEvaluator(extractor=None, reference=reference, eval_cfg=cfg, settings={})
    returned = evaluator.metrics(feats.double(), logits.double(), labels)
    declared = {k for k in evaluator.keys if "<k>" not in k}
    per_class = {k for k in returned if "/fid_class/" in k}
    assert set(returned) - per_class == declared
    assert per_class == {f"eval/fid_class/{c}" for c in range(3)}


def test_the_comparer_reads_records_without_torch_or_composing_conf():
    # a pure reader: neither torch nor Hydra's composition, and --help answers at once
    import subprocess
    import sys

    code = ("import sys, ganlab.compare.cli, ganlab.compare.__main__ as m; "
            "from ganlab.compare.tables import MATCHES; assert m.MATCHES == MATCHES, MATCHES; "
            "bad = [x for x in ('torch', 'hydra', 'ganlab.configure', 'ganlab.dstar') "
            "if x in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    light = subprocess.run([sys.executable, "-c", "import sys, ganlab.compare.__main__; "
                            "print(sorted(m for m in sys.modules if m.startswith('scipy')))"],
                           capture_output=True, text=True)
    assert light.stdout.strip() == "[]"  # --help parses before the statistics load
