"""Composition of every config group, and validation errors that name key, value and rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from ganlab.config import CONF_DIR, ConfigError, Role, group_options, role_of, sweep_cell
from ganlab.configure import check, compose
from ganlab.data import DATASETS
from ganlab.registry import Registry
from tests.helpers import run_here

REPO = Path(__file__).resolve().parents[1]
GROUPS = sorted(p.name for p in Path(CONF_DIR).iterdir()
                if p.is_dir() and p.name not in ("experiment", "launcher", "ablation"))


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_of_every_group_composes_and_checks(make_cfg, group):
    # every name an option file gives is one a registry implements (check() asks them)
    for option in _options(group):
        base = _extends(group, option)  # an option may be a preset of another (dcgan_small)
        cfg = make_cfg(f"{group}={option}", *(["data=mnist"] if base == "dcgan" else []))
        check(cfg)
        if "name" in cfg[group]:
            assert cfg[group].name == base


def _extends(group: str, option: str) -> str:
    """The option an option file builds on through its own defaults list, else itself."""
    from omegaconf import OmegaConf

    own = OmegaConf.load(REPO / "conf" / group / f"{option}.yaml")
    parents = [d for d in own.get("defaults", []) if isinstance(d, str) and d != "_self_"]
    return _extends(group, parents[0]) if parents else option


def test_an_image_dataset_picks_its_model_family(make_cfg):
    for data in DATASETS:
        cfg = make_cfg(f"data={data}")
        assert cfg.model.name == ("mlp" if DATASETS[data].kind == "toy2d" else "dcgan")
        check(cfg)
    # an explicit choice still wins, and a mismatch is refused naming what fits
    with pytest.raises(ConfigError, match="model='mlp' does not fit data='mnist'; "
                                          "image data needs model=dcgan"):
        check(make_cfg("data=mnist", "model=mlp"))


def test_a_registry_names_the_key_and_what_exists():
    registry: Registry[int] = Registry("norm")
    registry.register("a")(1)
    registry.register("b")(2)
    assert registry.choose("b") == 2
    with pytest.raises(ConfigError, match=r"^norm.g='c' is not allowed; choose one of: a, b$"):
        registry.choose("c", "norm.g")
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a")(3)


@pytest.mark.parametrize("key, role", [
    ("norm.g", Role.TRICK), ("extras.feature_matching.weight", Role.TRICK),
    ("smoothing", Role.TRICK), ("smoothing.name", Role.STUDY), ("train.d_steps", Role.TRICK),
    ("train.lr_d", Role.HPARAM), ("train.steps", Role.BUDGET), ("data.name", Role.CLASS),
    ("data.root", Role.INFRA), ("model.name", Role.CLASS), ("model.g_width", Role.TRICK),
    ("eval.num_samples", Role.EVAL), ("eval.every", Role.SCHEDULE),
    ("fanout.n_jobs", Role.INFRA), ("logger", Role.INFRA), ("launcher", Role.INFRA),
    ("experiment", Role.STUDY), ("ablation@_global_", Role.TRICK), ("+seed", Role.SEED),
    ("train.nope", None), ("nope", None),
])
def test_roles_come_from_the_schema(key, role):
    assert role_of(key) == role


def test_sweep_cells_leave_out_seed_preset_and_infrastructure():
    overrides = ["seed=3", "norm.g=batch", "experiment=norm", "fanout.n_jobs=4",
                 "train.device=cpu", "launcher=joblib", "logger=none", "smoothing=two_sided"]
    assert sweep_cell(overrides) == "norm.g=batch,smoothing=two_sided"
    assert sweep_cell(["seed=1", "fanout.n_jobs=2"]) == "base"


def test_smoothing_presets_carry_alpha_and_beta(make_cfg):
    values = {s: (make_cfg(f"smoothing={s}").smoothing.real_target,
                  make_cfg(f"smoothing={s}").smoothing.fake_target)
              for s in ("none", "one_sided", "two_sided")}
    assert values == {"none": (1.0, 0.0), "one_sided": (0.9, 0.0), "two_sided": (0.9, 0.1)}


def test_defaults_are_the_documented_ones(make_cfg):
    cfg = make_cfg()
    assert (cfg.data.name, cfg.model.name, cfg.loss.name) == ("ring8", "mlp", "non_saturating")
    assert (cfg.norm.g, cfg.norm.d, cfg.labels.name) == ("none", "none", "none")
    assert cfg.eval.num_samples == 2500
    assert compose().logger.mode == "offline"  # W&B never needs a login by default


@pytest.mark.parametrize("overrides, key, fragment", [
    (["smoothing.real_target=1.5"], "smoothing.real_target=1.5", "(0, 1]"),
    (["smoothing.real_target=0"], "smoothing.real_target=0", "(0, 1]"),
    (["smoothing.fake_target=-0.1"], "smoothing.fake_target=-0.1", "[0, 1)"),
    (["smoothing.real_target=0.6", "smoothing.fake_target=0.7"],
     "smoothing.fake_target=0.7", "beta must be < 1 - alpha"),
    (["train.d_steps=0"], "train.d_steps=0", ">= 1"),
    (["train.g_steps=0"], "train.g_steps=0", ">= 1"),
    (["model.g_width=-3"], "model.g_width=-3", ">= 1"),
    (["model.d_width=0"], "model.d_width=0", ">= 1"),
    (["train.batch_size=0"], "train.batch_size=0", ">= 1"),
    (["train.lr_d=0"], "train.lr_d=0", "> 0"),
    (["train.betas_g=[0.5,1.0]"], "train.betas_g=[0.5, 1.0]", "[0, 1)"),
    (["norm.g=layer"], "norm.g='layer'", "none, batch"),
    (["norm.d=spectral"], "norm.d='spectral'", "none, batch"),
    (["data.name=celeba"], "data='celeba'", "ring8, grid25, mnist"),
    (["logger.mode=sometimes"], "logger.mode='sometimes'", "offline, online, disabled"),
    (["model=dcgan"], "model='dcgan'", "needs model=mlp"),
    (["extras.minibatch_discrimination.kernels=-1"], "kernels=-1", ">= 0"),
    (["extras.feature_matching.weight=-1"], "extras.feature_matching.weight=-1", ">= 0"),
    (["labels.class_weight=-1"], "labels.class_weight=-1", ">= 0"),
    (["eval.ema=1"], "eval.ema=1.0", "decay of the average of G's weights and must be in [0, 1)"),
    (["eval.ema=-0.1"], "eval.ema=-0.1", ">= 0"),
    (["train.device=tpu"], "train.device='tpu'", "auto, cpu, cuda"),
    (["norm.g=batch", "train.batch_size=1"], "train.batch_size=1", ">= 2"),
])
def test_validation_errors_name_key_value_and_rule(make_cfg, overrides, key, fragment):
    with pytest.raises(ConfigError) as info:
        check(make_cfg(*overrides))
    message = str(info.value)
    assert key in message and fragment in message


def test_cli_invalid_value_exits_nonzero_with_one_line_and_no_traceback(tmp_path):
    out = run_here("smoothing.real_target=1.5", "logger=none", f"hydra.run.dir={tmp_path / 'r'}")
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines == ["ganlab: config error: smoothing.real_target=1.5 is not allowed; "
                     "it is 1 - alpha and must be in (0, 1]"]
    assert "Traceback" not in out.stdout + out.stderr
    # refused before anything was written: no run dir, no record for the comparer to find
    assert not (tmp_path / "r").exists()


def test_cli_unknown_group_option_lists_the_allowed_ones(tmp_path):
    out = run_here("data=celeba", "logger=none", f"hydra.run.dir={tmp_path / 'r'}")
    assert out.returncode == 2
    assert out.stderr.splitlines() == ["ganlab: config error: data='celeba' is not allowed; "
                                       "choose one of: " + ", ".join(group_options("data"))]
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_cli_wrong_type_names_the_key(tmp_path):
    out = run_here("train.d_steps=abc", "logger=none", f"hydra.run.dir={tmp_path / 'r'}")
    assert out.returncode != 0
    assert "train.d_steps" in out.stderr and "Traceback" not in out.stderr


def test_a_config_sent_to_a_worker_and_back_leaves_the_schema_intact():
    # launchers (submitit, Ray) pickle a job's config with cloudpickle and unpickle its
    # return, which carries configs, in the launching process: the schema travels by name,
    # so the next config composed there is typed as before
    import dataclasses
    import pickle

    import cloudpickle

    from ganlab.configure import check_key_value, schema

    cfg = compose(["extras=[feature_matching]", "fanout.seeds=auto"])
    assert pickle.loads(pickle.dumps(schema())) is schema()  # by name, not by value
    back = cloudpickle.loads(cloudpickle.dumps(cfg))
    assert back == cfg
    assert {f.name for f in dataclasses.fields(schema())} >= {"fanout", "extras", "train"}
    check_key_value("fanout.seeds", "auto")
    assert compose(["fanout.seeds=auto"]).fanout.seeds == "auto"
