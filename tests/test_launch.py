"""Experiment presets, launchers (Ray with logical GPUs, submitit, a Ray cluster), sweeps
that lose no run, and exact re-runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from ganlab.compare.__main__ import main as compare_main
from ganlab.config import VARIANT_ROLES, ConfigError, Role, role_of
from ganlab.configure import check, compose, load_config
from ganlab.rerun import main as rerun_main
from tests.helpers import REPO, assert_same_tensors, load_weights, run_cli, run_here

PRESETS = sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")
                 if p.stem != "eq15")  # eq15 is not a sweep: ganlab.dstar runs its cases
# presets that fix their data (the demo: ring8; PacGAN's protocol: 2-D mixtures only)
PINNED = {"quick": ["ring8"], "pacgan2d": ["ring8", "grid25"], "fig21": ["mnist"],
          "balance": ["grid25"], "labels": ["mnist"], "salimans2016-mnist": ["mnist"],
          "smoothing-mnist": ["mnist"], "d-batches": ["mnist"]}
# else 5; presets with seeds in stages list their first stage
SEEDS = {"quick": "0,1,2", "pacgan2d": "0,1,2,3,4,5,6,7,8,9", "d-batches": "0,1,2",
         "smoothing": "0,1,2"}
TINY = ["train.steps=4", "train.batch_size=16", "eval.every=0", "eval.num_samples=100",
        "logger=none", "train.progress=false"]


def _sweep_params(preset: str):
    """A preset's sweeper params, its own or those of the preset it extends."""
    conf = OmegaConf.load(REPO / "conf" / "experiment" / f"{preset}.yaml")
    params = OmegaConf.select(conf, "hydra.sweeper.params")
    if params is not None:
        return params
    (parent,) = [d for d in conf.defaults if isinstance(d, str)
                 and (REPO / "conf" / "experiment" / f"{d}.yaml").exists()]
    return _sweep_params(parent)


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_sweeps_seeds_and_variant_keys_only(preset):
    params = _sweep_params(preset)
    axes = [k for k in params if k != "seed"]
    assert "seed" in params and axes  # replicated over seeds, along at least one axis
    # what it sweeps changes the trained model (never infrastructure or the evaluation);
    # sweeping the data makes one comparison class per dataset
    assert all(role_of(k) in VARIANT_ROLES | {Role.CLASS} for k in axes), axes


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("data", [["data=ring8", "model=mlp"], ["data=mnist", "model=dcgan"]])
def test_presets_compose_on_ring8_and_mnist_with_seeds_and_a_baseline(preset, data):
    name = data[0].split("=")[1]
    if name in PINNED.get(preset, [name]):
        cfg = compose([f"experiment={preset}", *data])
        assert cfg.data.name == name
    else:  # a preset that pins its data runs on its own
        cfg = compose([f"experiment={preset}"])
        assert cfg.data.name == PINNED[preset][0]
    check(cfg)
    assert cfg.study.name == preset and cfg.study.question
    # a baseline wherever a class holds variants (PacGAN's protocol is one model per dataset)
    assert cfg.study.baselines or preset == "pacgan2d"
    text = (REPO / "conf" / "experiment" / f"{preset}.yaml").read_text()
    assert text.startswith("# @package _global_\n# ")  # and says what it asks
    # presets meant for conclusions run 5 seeds; the demo keeps 3 (its report says thin)
    params = _sweep_params(preset)
    assert str(params.seed).replace(" ", "") == SEEDS.get(preset, "0,1,2,3,4")


def test_width_preset_sets_d_width_from_the_ratio():
    for ratio, expected in ((0.25, 32), (4.0, 512)):
        cfg = compose(["experiment=width", f"model.width_ratio={ratio}"])
        assert (cfg.model.g_width, cfg.model.d_width) == (128, expected)
    cfg = compose(["data=mnist", "model=dcgan", "model.width_ratio=0.5"])
    assert (cfg.model.g_width, cfg.model.d_width) == (64, 32)


def _results(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.rglob("result.json"))]


def test_salimans2016_rows_are_each_trick_removed(tmp_path):
    out = run_here("-m", "experiment=salimans2016", "hydra.sweeper.params.seed=0", *TINY,
                  f"hydra.sweep.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-2000:]
    rows = {r["hparams"]["study.variant"]: r["trick"] for r in _results(tmp_path)}
    full = rows["all"]
    assert (full["labels.name"], full["norm.g"], full["smoothing.real_target"]) == (
        "kplus1", "virtual", 0.9)
    assert full["extras.minibatch_discrimination.kernels"] > 0
    assert full["extras.feature_matching.weight"] > 0
    changed = {name: {k for k in full if row[k] != full[k]} for name, row in rows.items()}
    assert changed == {
        "all": set(), "minus_vbn_plus_bn": {"norm.g"}, "minus_ls": {"smoothing.real_target"},
        "minus_l": {"labels.name"},
        "minus_l_plus_ha": {"labels.name", "extras.historical_averaging.weight"},
        "minus_mbf": {"extras.minibatch_discrimination.kernels"}}
    # and the preset's sweep cells are named without the seed or the preset itself
    assert all("seed" not in p.name and "experiment" not in p.name
               for p in tmp_path.iterdir() if p.is_dir())


def _overlaps(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


@pytest.mark.heavy
def test_local_launcher_packs_runs_per_gpu_with_one_device_each(tmp_path):
    # Ray started with 2 logical GPUs on this CPU machine; 5 runs, 2 per GPU: one waits.
    # $RAY_ADDRESS naming a cluster (here none is there) does not pull launcher=local into it
    out = run_cli("-m", "launcher=local", "fanout.gpus=2", "fanout.runs_per_gpu=2",
                  "seed=0,1,2,3,4", *TINY, f"hydra.sweep.dir={tmp_path}",
                  env={"RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": "127.0.0.1:1"})
    assert out.returncode == 0, out.stderr[-3000:]
    results = _results(tmp_path)
    assert len(results) == 5 and all(r["status"] == "completed" for r in results)
    devices = [r["host"]["cuda_visible_devices"] for r in results]
    assert set(devices) <= {"0", "1"}  # exactly one device each
    for device in set(devices):
        spans = [(r["host"]["started"], r["host"]["ended"]) for r in results
                 if r["host"]["cuda_visible_devices"] == device]
        assert _overlaps(spans) <= 2
    assert len({r["host"]["pid"] for r in results}) == 5  # a fresh process per run
    # at the launching shell's priority, not Ray's default niceness of 15 for workers
    assert {r["host"]["niceness"] for r in results} == {os.nice(0)}


@pytest.mark.heavy
def test_submitit_launcher_runs_the_sweep_as_jobs(tmp_path):
    out = run_cli("-m", "launcher=submitit_local", "seed=0,1", *TINY,
                  f"hydra.sweep.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    results = _results(tmp_path)
    assert [r["status"] for r in results] == ["completed", "completed"]
    assert len({r["host"]["pid"] for r in results}) == 2
    assert "2 completed, 0 diverged, 0 failed" in out.stdout + out.stderr
    # the task travels pickled by reference: its checkpoints hold the counters a requeued
    # job resumes from
    for ckpt in sorted(tmp_path.rglob("checkpoints/last.pt")):
        state = torch.load(ckpt, weights_only=True)
        assert state["counters"]["step"] == results[0]["step"] > 0


@pytest.mark.heavy
def test_relaunching_a_killed_sweep_resumes_it_and_skips_finished_runs(tmp_path):
    args = ["-m", "seed=0,1", "train.steps=40", "train.checkpoint_every=10", "eval.every=20",
            "eval.num_samples=100", "logger=none", "train.progress=false",
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    killed = run_cli("20", *args, module="tests.kill_after")
    assert killed.returncode == -9  # the whole sweep process died during seed=0
    statuses = [r["status"] for r in _results(tmp_path / "sweep")]
    assert statuses == ["running"]
    # relaunched with other infrastructure keys: the same cells, so the same runs resume
    again = run_here(*args, "fanout.n_jobs=3", "logger.project=elsewhere")
    assert again.returncode == 0 and "resumed from" in again.stdout + again.stderr
    assert len(_results(tmp_path / "sweep")) == 2
    assert [r["status"] for r in _results(tmp_path / "sweep")] == ["completed", "completed"]
    ckpts = sorted((tmp_path / "sweep").rglob("last.pt"))
    stamps = [p.stat().st_mtime_ns for p in ckpts]
    third = run_here(*args)
    assert third.returncode == 0 and "nothing to do" in third.stdout + third.stderr
    assert [p.stat().st_mtime_ns for p in ckpts] == stamps  # finished runs left alone
    # the resumed run equals an uninterrupted one
    ref = run_here(*args[2:], "seed=0", f"hydra.run.dir={tmp_path / 'ref'}")
    assert ref.returncode == 0
    resumed = next(p.parent.parent for p in ckpts if p.parent.parent.name == "seed=0")
    assert_same_tensors(load_weights(resumed), load_weights(tmp_path / "ref"))


def test_rerun_repeats_a_run_bit_for_bit_and_takes_overrides(tmp_path, caplog, capsys):
    original = tmp_path / "orig"
    assert run_here("train.steps=30", "eval.every=10", "eval.num_samples=200", "norm.g=batch",
                   "logger=none", f"hydra.run.dir={original}").returncode == 0
    # a fresh process, as a user re-runs a run: nothing of the original run's process helps
    out = run_cli(str(original), "--out", str(tmp_path / "again"), module="ganlab.rerun")
    assert out.returncode == 0, out.stderr
    a = json.loads((original / "result.json").read_text())
    b = json.loads((tmp_path / "again" / "result.json").read_text())
    assert a["metrics"] == b["metrics"] and a["trick"] == b["trick"]
    assert_same_tensors(load_weights(original), load_weights(tmp_path / "again"))
    # the same machine: nothing to warn of
    assert b["host"]["cpu"] == a["host"]["cpu"] and "last bits" not in out.stderr
    changed = run_here(str(original), "smoothing=two_sided", "seed=5", "train.steps=40",
                       "--out", str(tmp_path / "changed"), module="ganlab.rerun")
    assert changed.returncode == 0, changed.stderr
    c = json.loads((tmp_path / "changed" / "result.json").read_text())
    assert (c["seed"], c["step"], c["trick"]["smoothing.fake_target"]) == (5, 40, 0.1)
    assert c["trick"]["norm.g"] == "batch"  # everything else as saved
    # a global group choice (an ablation row) sets what composing it sets
    row = load_config(original, ["ablation=minus_ls"])
    assert (row.labels.name, row.smoothing.real_target, row.norm.g) == ("kplus1", 1.0, "virtual")
    assert row.extras.feature_matching.weight == 1.0 and row.study.variant == "minus_ls"
    assert row.train.steps == 30  # untouched keys keep their saved values
    # --out may be this re-run itself (finished: nothing to do), never another experiment
    # (in this process: each CLI start costs seconds)
    again = str(tmp_path / "again")
    with caplog.at_level("INFO", logger="ganlab.train"):
        assert rerun_main([str(original), "--out", again]) == 0
    assert "is already completed; nothing to do" in caplog.text
    assert rerun_main([str(original), "seed=9", "--out", again]) == 2
    assert "holds a run of another experiment (seed: 0 -> 9)" in capsys.readouterr().err
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    assert rerun_main([str(original), "--out", str(tmp_path / "junk")]) == 2
    assert "holds no run" in capsys.readouterr().err
    # a record begun on another CPU and resumed here: the re-run says what to expect
    record = json.loads((original / "result.json").read_text())
    (last,) = record["host"]["launches"]
    here = last["cpu"]
    record["host"]["launches"] = [{**last, "cpu": "Other CPU 9000", "to_step": 10}, last]
    (original / "result.json").write_text(json.dumps(record))
    assert rerun_main([str(original), "--out", again]) == 0
    err = capsys.readouterr().err
    assert f"CPU 'Other CPU 9000' then {here!r} (here: {here!r})" in err
    assert "not necessarily its last bits" in err and "torch " not in err.split("last bits")[0]


def test_an_ablation_row_chosen_on_rerun_resets_what_it_resets(tmp_path):
    # a run of the "all" row, then each other row chosen on top of its saved config: every
    # key a row decides comes out as that row composes it, defaults included
    (tmp_path / ".hydra").mkdir()
    full = compose(["+ablation@_global_=all", "train.steps=7"])
    (tmp_path / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(full))
    for row in ("minus_l", "minus_ls", "minus_mbf", "minus_vbn_plus_bn", "minus_l_plus_ha"):
        loaded = load_config(tmp_path, [f"ablation={row}"])
        fresh = compose([f"+ablation@_global_={row}", "train.steps=7"])
        assert OmegaConf.to_container(loaded) == OmegaConf.to_container(fresh), row
    assert load_config(tmp_path, ["ablation=minus_l"]).labels.name == "none"
    assert load_config(tmp_path, ["ablation=minus_ls"]).smoothing.real_target == 1.0


def test_rerun_overrides_are_checked(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("seed: 1\n")
    with pytest.raises(ConfigError, match="smoothing='sideways' is not allowed"):
        load_config(tmp_path, ["smoothing=sideways"])
    with pytest.raises(ConfigError, match="train.nope is not a config key"):
        load_config(tmp_path, ["train.nope=1"])
    with pytest.raises(ConfigError, match="train.steps='many' is not allowed; train.steps "
                                          "takes an integer"):
        load_config(tmp_path, ["train.steps=many"])
    with pytest.raises(ConfigError, match="has no saved config"):
        load_config(tmp_path / "missing", [])


# MNIST presets run here without the feature classifier (the slow tests train it), so they
# are compared on batch coupling, which needs none
NO_FEATURES = ["model.g_width=8", "eval.features=none", "norm.ref_batch_size=16"]


@pytest.mark.parametrize("preset, extra, runs", [
    # 2 datasets x 4 variants, one seed each (staged seeds: tests/test_stages.py)
    ("smoothing", ["fanout.seeds=list"], 8),
    ("pacgan2d", ["data.train_size=300"], 2),
    ("fig21", [*NO_FEATURES, "model.d_width=8"], 4),
    ("balance", ["train.d_steps=1,5",
                 "model.width_ratio=1.0,2.0", "train.steps=20", "eval.every=1"], 4),
    ("labels", NO_FEATURES, 4),
    ("salimans2016-mnist", NO_FEATURES, 6),
    ("smoothing-mnist", NO_FEATURES, 4),
])
def test_study_presets_run_and_compare_at_a_tiny_size(preset, extra, runs, tmp_path,
                                                      mnist_root):
    out = run_here("-m", f"experiment={preset}", "hydra.sweeper.params.seed=0", *TINY, *extra,
                   f"data.root={mnist_root}", f"hydra.sweep.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    results = _results(tmp_path)
    assert len(results) == runs and {r["status"] for r in results} == {"completed"}
    mnist = "eval.features=none" in extra
    assert compare_main([str(tmp_path), "--no-wandb",
                         *(["--metric", "coupling"] if mnist else [])]) == 0
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["study"]["name"] == preset
    assert doc["settings"]["primary_metric"] == (
        "eval/coupling" if mnist else "eval/modes_covered")
    if mnist:
        assert {r["comparability"]["data.name"] for r in results} == {"mnist"}
    # labelled and unlabelled runs are told apart: two classes, labelled first
    classes = [c["label"].split(",")[0] for c in doc["classes"]]
    if preset in ("labels", "salimans2016-mnist"):
        assert classes == ["labels=labelled", "labels=none"]
        rows = [[r["variant"] for r in t["rows"]] for c in doc["classes"]
                for t in c["tables"][:1]]
        assert rows == ({"labels": [["conditional", "auxiliary", "kplus1"], ["none"]],
                         "salimans2016-mnist": [
                             ["all", "minus_vbn_plus_bn", "minus_ls", "minus_mbf"],
                             ["minus_l", "minus_l_plus_ha"]]}[preset])
    if preset == "balance":  # compared at matched G updates (wall-clock: test_compare)
        assert compare_main([str(tmp_path), "--no-wandb", "--match", "g_steps"]) == 0
        doc = json.loads((tmp_path / "report.json").read_text())
        assert doc["settings"]["match"] == "g_steps"
        assert doc["classes"][0]["tables"][0]["budget"] == 20
