"""The comparer's statistics hold what they claim: interval coverage by simulation, effect
sizes and power against closed forms, verdicts on a log scale, and report.json as
documented."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from ganlab.compare.__main__ import main
from ganlab.compare.document import CLASS_KEYS, ROW_KEYS, SETTINGS_KEYS, TABLE_KEYS, TOP_KEYS
from ganlab.compare.runs import load_results
from ganlab.compare.stats import (
    d_z,
    d_z_interval,
    detectable,
    power,
    sd_upper,
    seeds_for,
    t_interval,
)
from ganlab.compare.tables import build_tables
from ganlab.storage import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
STUDIES = 4000  # simulated studies per case: the coverage estimate's sd is about 0.35 %


def _coverage(samples: np.ndarray, truth: float, transform=None) -> float:
    hits = 0
    for study in samples:
        x = study if transform is None else transform(study)
        lo, hi = t_interval(x)
        hits += lo <= truth <= hi
    return hits / len(samples)


@pytest.mark.parametrize("n", [3, 5, 10])
def test_the_95_percent_interval_covers_95_percent_of_normal_studies(n):
    rng = np.random.default_rng(n)
    coverage = _coverage(rng.normal(30.0, 4.0, (STUDIES, n)), 30.0)
    assert 0.93 <= coverage <= 0.97, coverage


def test_it_covers_at_least_90_percent_of_skewed_log_normal_studies():
    # FID-like spread across seeds: log-normal, sigma 0.5, on the linear scale
    rng = np.random.default_rng(10)
    sigma = 0.5
    coverage = _coverage(rng.lognormal(0.0, sigma, (STUDIES, 10)), math.exp(sigma ** 2 / 2))
    assert coverage >= 0.90, coverage
    # on a log-scale metric the interval is taken on log values: it covers the geometric
    # mean (the median) at the nominal rate even for a heavy tail (sigma 1)
    heavy = rng.lognormal(0.0, 1.0, (STUDIES, 10))
    coverage = _coverage(heavy, 0.0, transform=np.log)
    assert 0.93 <= coverage <= 0.97, coverage


def test_d_z_and_its_exact_interval():
    diffs = [1.0, 2.0, 3.0]  # mean 2, sd 1: d_z = 2
    assert d_z(diffs) == 2.0
    lo, hi = d_z_interval(diffs)
    # the interval's ends put the observed t = d_z sqrt(n) at the 97.5 % and 2.5 % points
    # of the noncentral t (Steiger & Fouladi 1997)
    t_obs = 2.0 * math.sqrt(3)
    assert stats.nct.cdf(t_obs, 2, lo * math.sqrt(3)) == pytest.approx(0.975, abs=1e-6)
    assert stats.nct.cdf(t_obs, 2, hi * math.sqrt(3)) == pytest.approx(0.025, abs=1e-6)
    # and it agrees with the paired t-test: it excludes 0 exactly when p < 0.05
    rng = np.random.default_rng(0)
    for _ in range(200):
        d = rng.normal(0.6, 1.0, 6)
        lo, hi = d_z_interval(d)
        p = stats.ttest_1samp(d, 0.0).pvalue
        assert (lo > 0 or hi < 0) == (p < 0.05)
    assert d_z([1.0, 1.0, 1.0]) is None and d_z_interval([0.5]) is None


def test_power_matches_the_one_sample_t_closed_form_and_a_simulation():
    # G*Power, one-sample t, two-tailed, alpha 0.05, power 0.8: n = 10 needs d = 0.996,
    # n = 20 needs d = 0.660
    assert detectable(1.0, 10, 0.05) == pytest.approx(0.996, abs=1e-3)
    assert detectable(1.0, 20, 0.05) == pytest.approx(0.6604, abs=1e-3)
    assert detectable(2.5, 10, 0.05) == pytest.approx(2.5 * 0.996, abs=3e-3)  # scales with sd
    assert detectable(0.0, 5, 0.05) == 0.0 and detectable(1.0, 1, 0.05) is None
    # a simulated study at the detectable effect rejects 80 % of the time
    effect, n = detectable(1.0, 5, 0.025), 5
    rng = np.random.default_rng(3)
    rejections = np.mean([stats.ttest_1samp(rng.normal(effect, 1.0, n), 0.0).pvalue < 0.025
                          for _ in range(STUDIES)])
    assert rejections == pytest.approx(0.80, abs=0.02)
    assert power(effect, n, 0.025) == pytest.approx(0.8, abs=1e-6)
    # seeds_for is its inverse: the fewest seeds reaching 80 %
    assert seeds_for(1.0, 1.0, 0.05) == 10 and seeds_for(0.99, 1.0, 0.05) == 11


CLASS = {"labels": "none", "data.name": "ring8", "data.split": "train", "model.name": "mlp",
         "eval": {"metrics": "modes2d", "num_samples": 2500}}


def _write(root: Path, variant: str, seed: int, metrics: dict, trick: dict,
           choices: dict | None = None) -> None:
    atomic_write_json(root / variant / f"seed={seed}" / "result.json", {
        "status": "completed", "error": None, "seed": seed, "trick": trick, "hparams": {},
        "comparability": CLASS, "metrics": metrics, "history": [], "step": 10,
        "study": {"name": "norm", "question": "does virtual norm decouple samples?"},
        "choices": choices or {}})


@pytest.fixture
def coupling_sweep(tmp_path) -> Path:
    # batch norm couples samples a thousand times more than virtual norm, on every seed
    for seed, noise in enumerate([1.0, 1.7, 0.6]):
        _write(tmp_path, "virtual", seed, {"eval/coupling": 1e-10 * noise},
               {"norm.g": "virtual"}, {"norm": "virtual"})
        _write(tmp_path, "batch", seed, {"eval/coupling": 1e-7 * noise * (1 + 0.3 * seed)},
               {"norm.g": "batch"}, {"norm": "batch"})
    return tmp_path


def test_a_thousandfold_change_over_three_seeds_is_a_verdict_on_the_log_scale(
        coupling_sweep):
    results = load_results([coupling_sweep])
    (t,) = build_tables(results, "coupling", baselines=[{"norm.g": "virtual"}])
    row = next(r for r in t.rows if not r.is_baseline)
    assert t.metric.scale == "log" and row.label == "batch"  # named by the norm option
    assert row.detail == "g=batch"
    assert row.verdict == "worse" and row.p < 0.05  # lower coupling is better
    assert row.delta == pytest.approx(1000 * math.exp(np.mean(np.log([1.0, 1.3, 1.6]))))
    assert row.delta_ci[0] > 100  # the ratio's interval
    # compared on the raw values instead, the same runs show nothing: the reason for logs
    (raw,) = build_tables(results, "coupling", baselines=[{"norm.g": "virtual"}],
                          scales={"eval/coupling": "linear"})
    assert next(r for r in raw.rows if not r.is_baseline).verdict == "no clear difference"


def test_option_named_variants_show_their_settings_on_a_second_line(coupling_sweep, capsys):
    assert main([str(coupling_sweep), "--metric", "coupling", "--baseline", "norm.g=virtual",
                 "--no-wandb"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "variants: virtual = g=virtual; batch = g=batch" in lines
    html = (coupling_sweep / "report.html").read_text()
    assert "variants: virtual = g=virtual; batch = g=batch" in html
    assert html.index("does virtual norm decouple samples?") < html.index("batch coupling")


def test_no_difference_says_what_the_seeds_could_have_seen(tmp_path, capsys):
    for seed, (a, b) in enumerate([(30.0, 30.5), (32.0, 31.0), (31.0, 31.8)]):
        _write(tmp_path, "a", seed, {"eval/fid": a}, {"norm.g": "none"})
        _write(tmp_path, "b", seed, {"eval/fid": b}, {"norm.g": "batch"})
    assert main([str(tmp_path), "--baseline", "norm.g=none", "--no-wandb",
                 "--seeds-for", "0.5"]) == 0
    out = capsys.readouterr().out
    diffs = np.array([0.5, -1.0, 0.8])
    # stated from the spread's 80 % upper confidence bound, not the sample's own spread
    upper = diffs.std(ddof=1) * math.sqrt(2 / stats.chi2.ppf(0.2, 2))
    assert sd_upper(diffs.std(ddof=1), 3) == pytest.approx(upper)
    found = detectable(upper, 3, 0.05)
    assert "g=batch: not decided: no clear difference in FID (+0.10 (+0.323 %) [" in out
    assert f"these would detect only a change of {found:.2f} or more" in out
    # and the seeds δ (5 % of the baseline's 31.0) would take
    more = seeds_for(0.05 * 31.0, upper, 0.05) - 3
    assert f"about {more} more paired seeds would detect δ = 5% (1.55)" in out
    needed = seeds_for(0.5, upper, 0.05)
    assert f"g=batch: {needed} paired seeds detect |Δ| = 0.5 in FID with 80% power" in out
    assert "Question: does virtual norm decouple samples?" in out
    assert "the evidence is thin" in out


def test_report_json_keys_are_the_documented_ones():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### report.json"):]
    section = section[:section.index("\n## ")]
    documented = set(re.findall(r"`([a-z_]+)`", section))
    for keys in (TOP_KEYS, SETTINGS_KEYS, CLASS_KEYS, TABLE_KEYS, ROW_KEYS):
        assert set(keys) <= documented, set(keys) - documented
