"""The config schema, the role of every key, and the cross-field rules (`validate`).

The dataclasses are the schema (Hydra's ConfigStore types every YAML value against them);
the YAML files under `conf/` hold the values. Each key carries a *role* in its field
metadata, declared once here; everything that sorts keys derives from it:

| role     | examples                          | result.json   | variant | fixed on resume | sweep cell |
| -------- | --------------------------------- | ------------- | ------- | --------------- | ---------- |
| trick    | norm.g, smoothing.*, extras.*     | trick         | yes     | yes             | yes        |
| hparam   | train.lr_d, model.z_dim           | hparams       | yes     | yes             | yes        |
| budget   | train.steps                       | hparams       | yes     | no (extends)    | yes        |
| class    | data.name, model.name             | comparability | -       | yes             | yes        |
| eval     | eval.num_samples, eval.features   | comparability | -       | yes             | yes        |
| schedule | eval.every, train.log_every       | -             | -       | no              | no         |
| infra    | train.device, logger.*, fanout.*  | -             | -       | no              | no         |
| study    | study.*                           | study         | -       | no              | no         |
| seed     | seed                              | seed          | -       | yes             | no (own dir)|

This module is the bottom layer: it knows no implementation. Which names a choice allows
comes from the registries of the parts (`ganlab.configure.check`).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import os
import typing
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from ganlab.cores import cpus_per_run, gpu_share, ray_cpus, ray_gpus


class ConfigError(ValueError):
    """Invalid user input; the message names the key, the value and what is allowed."""


class Role(str, enum.Enum):
    TRICK = "trick"  # a toggle of the tutorial's tricks
    HPARAM = "hparam"  # any other setting that shapes what is trained
    BUDGET = "budget"  # how long: part of the variant, but a finished run may be extended
    CLASS = "class"  # decides what may be compared at all (data, model family)
    EVAL = "eval"  # the evaluation protocol (recorded by the evaluator in comparability)
    SCHEDULE = "schedule"  # when to log, evaluate, checkpoint: the weights are the same
    INFRA = "infra"  # where and how a run runs and reports: never changes a number
    STUDY = "study"  # what a preset asks
    SEED = "seed"


VARIANT_ROLES = frozenset({Role.TRICK, Role.HPARAM, Role.BUDGET})
# what a relaunch into an existing run dir must agree on (the rest may change, e.g. the
# launcher, the device, or a larger train.steps)
RESUME_FIXED_ROLES = frozenset({Role.TRICK, Role.HPARAM, Role.CLASS, Role.EVAL, Role.SEED})
# what re-scoring a finished run may change without describing another model
RESCORE_ROLES = frozenset({Role.EVAL, Role.SCHEDULE, Role.INFRA})
# left out of a sweep cell's folder name: runs that differ only in these share a cell, so a
# sweep relaunched with another launcher, device or evaluation schedule finds its runs. A
# budget (train.steps) stays in the name: a sweep over it must not merge its runs.
CELL_EXCLUDED_ROLES = frozenset({Role.SCHEDULE, Role.INFRA, Role.STUDY, Role.SEED})
# config groups that set keys anywhere (`# @package _global_`) rather than one section
GLOBAL_GROUP_ROLES = {"launcher": Role.INFRA, "experiment": Role.STUDY, "ablation": Role.TRICK}


def keyed(default: Any, role: Role | None = None, *, at_least: float | None = None,
          above: float | None = None) -> Any:
    """A schema field with its role (else its section's) and the bound `validate` checks
    (a list default becomes a factory)."""
    metadata = {k: v for k, v in (("role", role), ("at_least", at_least), ("above", above))
                if v is not None}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def section(cls: type, role: Role | None = None) -> Any:
    """A config section; `role` is the default role of its keys."""
    return field(default_factory=cls, metadata={"role": role} if role else {})


@dataclass
class DataConfig:
    name: str = MISSING  # a dataset of ganlab.data.DATASETS
    # Where image datasets live (<root>/MNIST/raw/...); toy data ignores it.
    root: str = keyed("${oc.env:GANLAB_DATA_ROOT,'~/.cache/ganlab/data'}", Role.INFRA)
    split: str = "train"  # the split G is trained on
    download: bool = keyed(True, Role.INFRA)  # fetch missing image files if the network allows
    num_classes: int = 0  # labels the dataset carries (mode index for toy mixtures)
    image_size: int = 0  # 0 for 2-D toy data
    channels: int = 0  # 0 for 2-D toy data
    # 2-D toy data: 0 = an endless stream of fresh samples; N = a fixed training set of N
    # samples drawn once from the seed and visited in shuffled epochs (PacGAN's protocol)
    train_size: int = keyed(0, at_least=0)


@dataclass
class ModelConfig:
    name: str = keyed(MISSING, Role.CLASS)  # a family of ganlab.nets.MODELS
    z_dim: int = keyed(64, at_least=1)  # latent size
    g_width: int = keyed(64, Role.TRICK, at_least=1)  # G base width: hidden units (mlp) or channels (dcgan)
    d_width: int = keyed(64, Role.TRICK, at_least=1)  # D base width; d_width / g_width is the capacity ratio
    width_ratio: float = 1.0  # d_width defaults to round(g_width * width_ratio)
    depth: int = keyed(3, at_least=1)  # hidden layers of the mlp (dcgan depth follows the image size)
    d_depth: int = keyed(0, at_least=0)  # D's hidden layers where they differ from G's (0: depth)
    maxout_pieces: int = keyed(5, at_least=2)  # pieces per unit of pacgan_mlp's maxout D


@dataclass
class LossConfig:
    name: str = MISSING  # a loss of ganlab.losses.LOSSES: G's half of the game (§3.2.3)


@dataclass
class SmoothingConfig:
    name: str = keyed("none", Role.STUDY)  # the preset the values came from
    real_target: float = 1.0  # D's target on real data, 1 - alpha
    fake_target: float = 0.0  # D's target on generated data, beta


@dataclass
class NormConfig:
    g: str = "none"  # a norm of ganlab.nets.norm.NORMS, in every hidden layer of G
    d: str = "none"  # ... in D's hidden layers (never its input layer)
    # With batch norm in D: `separate` normalises real and fake as two batches in D's update
    # (DCGAN); `joint` normalises one real+fake batch in D's update and, so that G is scored
    # as D was trained, passes G's fakes through D beside a fresh real batch too;
    # `joint_inconsistent` is joint in D's update but fakes alone in G's (D never trained on
    # that regime; kept to show why not, experiments/d-batches). Without batch statistics in D
    # (or minibatch features: separate) the three compute the same thing.
    d_batches: str = "separate"
    ref_batch_size: int = keyed(64, at_least=1)  # N: the fixed reference batch of reference/virtual norm


@dataclass
class LabelsConfig:
    name: str = "none"  # a mode of ganlab.labels.LABEL_MODES
    fraction: float = 1.0  # share of real samples whose label D sees (kplus1 may use < 1)
    # weight of the class terms against the adversarial ones; 1 weighs them equally, as in
    # Odena et al. 2017 (AC-GAN: L_S + L_C) and Salimans et al. 2016 (L_sup + L_unsup)
    class_weight: float = keyed(1.0, at_least=0)


@dataclass
class ExtrasConfig:
    """Typed by the plug-ins of ganlab.extras (ganlab.configure builds the full schema)."""


@dataclass
class TrainConfig:
    steps: int = keyed(2000, Role.BUDGET, at_least=1)  # rounds: k D updates then g_steps G updates each
    batch_size: int = keyed(64, at_least=1)  # samples per D and G update
    d_steps: int = keyed(1, Role.TRICK, at_least=1)  # k: D updates per round
    g_steps: int = keyed(1, Role.TRICK, at_least=1)  # G updates per round
    lr_g: float = keyed(2e-4, above=0)  # G's Adam learning rate
    lr_d: float = keyed(2e-4, above=0)  # D's Adam learning rate
    betas_g: list[float] = keyed([0.5, 0.999], Role.HPARAM)  # G's Adam (beta1, beta2)
    betas_d: list[float] = keyed([0.5, 0.999], Role.HPARAM)  # D's Adam (beta1, beta2)
    checkpoint_every: int = keyed(500, Role.SCHEDULE, at_least=0)  # rounds between checkpoints (0: end)
    log_every: int = keyed(50, Role.SCHEDULE, at_least=1)  # rounds between loss logs and divergence checks
    device: str = keyed("auto", Role.INFRA)  # auto | cpu | cuda | cuda:N
    # Adam's kernel: auto (fused where the device has it) | fused | foreach | loop. They
    # agree up to the last bits; result.json's host.optimizer_impl says which one ran.
    optimizer_impl: str = keyed("auto", Role.INFRA)
    # capture the round in one CUDA graph and replay it (ganlab.graphs: CUDA, fresh 2-D data)
    cuda_graphs: bool = keyed(False, Role.INFRA)
    progress: bool = keyed(True, Role.INFRA)  # progress bar on a terminal
    # CPU threads of this run: 0 = the launcher's share of the cores (ganlab.cores: cores /
    # runs at once, SLURM's cpus_per_task, Ray's reservation); N = N
    threads: int = keyed(0, Role.INFRA, at_least=0)


@dataclass
class EvalConfig:
    every: int = keyed(500, Role.SCHEDULE, at_least=0)  # rounds between evaluations (0: only at the end)
    num_samples: int = keyed(2500, at_least=1)  # generated samples per evaluation
    batch_size: int = keyed(500, at_least=1)  # generation batch size during evaluation
    hq_std: float = keyed(3.0, above=0)  # 2-D: a sample is high-quality within hq_std stds of its mode
    mode_min_count: int = keyed(1, at_least=1)  # 2-D: HQ samples a mode needs to count as covered
    grid_size: int = keyed(64, Role.SCHEDULE, at_least=0)  # samples in the saved image grid
    # images: FID / IS / KID / precision-recall in the feature space of `features`, one of
    # ganlab.evaluate.FEATURES (auto: classifier on MNIST-like data, inception otherwise)
    features: str = "auto"
    inception_weights: str | None = keyed(None, Role.INFRA)  # local InceptionV3 weights
    final_num_samples: int = keyed(10000, at_least=1)  # generated images for the final scores
    real_split: str = "test"  # the real reference set
    real_num_samples: int = keyed(10000, at_least=1)  # real images in the reference set
    is_splits: int = keyed(10, at_least=1)  # Inception Score: splits of the samples (mean ± sd)
    kid_subsets: int = keyed(100, at_least=1)  # KID: random subsets averaged
    kid_subset_size: int = keyed(1000, at_least=1)  # KID: samples per subset
    pr_k: int = keyed(3, at_least=1)  # k-th neighbour radius of improved precision/recall
    classifier_epochs: int = keyed(2, at_least=1)  # training of the classifier feature extractor
    # score an exponential moving average of G's weights with this decay (e.g. 0.999) in
    # place of G (ganlab.average; training is unchanged); 0 scores G itself
    ema: float = keyed(0.0, at_least=0)


@dataclass
class LoggerConfig:
    name: str = "wandb"  # a tracker of ganlab.tracking.TRACKERS
    mode: str = "offline"  # offline | online | disabled; online needs `wandb login`
    project: str | None = None  # None: $WANDB_PROJECT, else "ganlab"
    entity: str | None = None  # None: $WANDB_ENTITY, else W&B's default for the login
    group: str | None = None  # None: the sweep (study or sweep dir name) and its cell
    tags: list[str] = field(default_factory=list)  # added to the study, variant, swept keys
    # online mode: seconds to reach W&B before logging offline instead (`wandb sync` later)
    init_timeout: float = keyed(10.0, above=0)


@dataclass
class FanoutConfig:
    # How `launcher=local` spreads a sweep over one machine (see conf/launcher/local.yaml).
    runs_per_gpu: int = 2  # small runs packed on each GPU
    n_jobs: int = 2  # runs at a time on a machine without GPUs
    gpus: int | None = None  # GPUs to schedule on (None: all visible ones)
    # launcher=ray: the cluster to join, and each run's share of a GPU and CPUs there (its
    # threads: ganlab.cores)
    ray_address: str = "${oc.env:RAY_ADDRESS,auto}"  # launcher=ray: the cluster to join
    gpu_share: float = 1.0  # launcher=ray: a run's share of a GPU (0 on CPU-only clusters)
    # a cluster run's resources (launcher=ray: CPUs; launcher=slurm_cpu: CPUs, memory and
    # time): cpus_per_run is also the run's thread budget (ganlab.cores)
    cpus_per_run: int = keyed(1, at_least=1)  # a cluster run's CPUs (and threads)
    mem_gb: int = keyed(4, at_least=1)  # launcher=slurm_cpu: a run's memory
    time_min: int = keyed(60, at_least=1)  # launcher=slurm_cpu: a run's time limit
    # runs of a sweep that differ only by seed train together, up to this many as one
    # stacked model in one job (ganlab.sweeper groups them; ganlab.vectorize trains them)
    vectorize_seeds: int = keyed(1, at_least=1)
    group_seeds: list[int] = keyed([])  # set by the sweeper: the seeds this job trains
    # Seeds in stages (ganlab.sweeper): `list` runs the sweep's seed list; `auto` runs
    # seeds_min seeds of every cell, compares, and adds seeds_step more only to the variants
    # whose verdict is still open, up to seeds_max (the looks of a sequential design, which
    # every run records: ganlab.compare.stats.Design).
    seeds: str = "list"  # list: the sweep's seeds; auto: seeds in stages (above)
    seeds_min: int = keyed(3, at_least=3)  # the first analysis (a t interval needs 3 pairs)
    seeds_step: int = keyed(2, at_least=1)  # seeds added per stage to open variants
    seeds_max: int = keyed(15, at_least=3)  # the most seeds a variant gets


@dataclass
class StudyConfig:
    # What an experiment preset asks; carried into result.json for the comparer.
    name: str = ""  # the study (groups its runs in W&B and the report)
    question: str = ""  # the question it asks, in one line
    # a named row of a preset (the ablations of salimans2016): part of the variant
    variant: str = keyed("", Role.HPARAM)
    metric: str = ""  # the metric that answers the question (default: fid, else modes_covered)
    # The baseline variant of each comparison class, as "key=value,key=value" over the
    # trick (or hparam) keys of result.json, e.g. "labels=none".
    baselines: list[str] = field(default_factory=list)
    # cases a study runs in one process rather than as a sweep (ganlab.dstar:
    # "real_target,fake_target" pairs, which a Cartesian sweep cannot pair up)
    cases: list[str] = field(default_factory=list)
    # the smallest effects of interest, by metric, where the registry's do not fit the
    # question: {modes_covered: "1", fid: "5%"} (an absolute change, or % of the baseline)
    smallest_effect: dict[str, str] = field(default_factory=dict)


@dataclass
class Config:
    data: DataConfig = section(DataConfig, Role.CLASS)
    model: ModelConfig = section(ModelConfig, Role.HPARAM)
    loss: LossConfig = section(LossConfig, Role.TRICK)
    smoothing: SmoothingConfig = section(SmoothingConfig, Role.TRICK)
    norm: NormConfig = section(NormConfig, Role.TRICK)
    labels: LabelsConfig = section(LabelsConfig, Role.TRICK)
    extras: ExtrasConfig = section(ExtrasConfig, Role.TRICK)
    train: TrainConfig = section(TrainConfig, Role.HPARAM)
    eval: EvalConfig = section(EvalConfig, Role.EVAL)
    logger: LoggerConfig = section(LoggerConfig, Role.INFRA)
    fanout: FanoutConfig = section(FanoutConfig, Role.INFRA)
    study: StudyConfig = section(StudyConfig, Role.STUDY)
    seed: int = keyed(0, Role.SEED, at_least=0)  # every random stream of the run derives from it


# -- roles ----------------------------------------------------------------------------------
@functools.cache
def role_of(key: str, schema: type = Config) -> Role | None:
    """The role of a dotted config key (or of a config group's name); None if unknown.

    The most specific declaration wins: a field's own role, else its section's. Keys
    inside a section the static schema leaves open (the plug-ins' `extras.*`) take the
    section's role; any other unknown key has none."""
    base = key.lstrip("+~").split("@")[0]
    if base in GLOBAL_GROUP_ROLES:
        return GLOBAL_GROUP_ROLES[base]
    role, cls = None, schema
    for part in base.split("."):
        fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(
            cls) else {}
        if part not in fields:
            return role if cls is not schema and not fields else None
        role = fields[part].metadata.get("role", role)
        # `from __future__ import annotations` leaves field types as strings: resolve them
        cls = typing.get_type_hints(cls)[part]
    return role


def keys_with_role(cfg: DictConfig, roles: frozenset[Role] | set[Role]) -> dict[str, Any]:
    """The flattened keys of `cfg` whose role is one of `roles`."""
    return {k: v for k, v in flatten(cfg).items() if role_of(k) in roles}


def eval_settings(cfg: DictConfig) -> dict[str, Any]:
    """The `eval.*` keys that make up an evaluation protocol (role `eval`), without prefix."""
    settings = {k.removeprefix("eval."): v for k, v in keys_with_role(cfg, {Role.EVAL}).items()}
    if "ema" in settings and not settings["ema"]:
        settings["ema"] = False  # G itself, as every protocol said before eval.ema existed
    return settings


def flatten(cfg: DictConfig | dict, prefix: str = "") -> dict[str, Any]:
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    flat: dict[str, Any] = {}
    for key, value in container.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


# a run dir under a sweep: its cell, then its seed (a stacked member's is its leader's with its
# own seed, ganlab.train.member_runs)
SEED_SUBDIR_END = "seed=${seed}"
DEFAULT_SUBDIR = "${ganlab.cell:${hydra.overrides.task}}/" + SEED_SUBDIR_END  # conf/config.yaml


def sweep_cell(overrides: list[str] | ListConfig) -> str:
    """A sweep cell's folder name: the job's overrides, sorted, without the seed, the preset
    and infrastructure (so a relaunch with another launcher or device finds its runs)."""
    kept = sorted(o for o in overrides
                  if role_of(o.partition("=")[0]) not in CELL_EXCLUDED_ROLES)
    # Hydra runs with no kept override (only seeds swept) still need a relative folder name
    return ",".join(o.lstrip("+~") for o in kept) or "base"


# -- resolvers used by conf/ -------------------------------------------------------------------
def _scale(width: int, ratio: float) -> int:
    return max(1, round(width * ratio))


for _name, _fn in (("ganlab.cell", sweep_cell), ("ganlab.ray_gpus", ray_gpus),
                   ("ganlab.ray_cpus", ray_cpus), ("ganlab.gpu_share", gpu_share),
                   ("ganlab.cpus_per_run", cpus_per_run), ("ganlab.scale", _scale)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


# -- validation --------------------------------------------------------------------------------
def choice(key: str, value: Any, allowed) -> None:
    if value not in allowed:
        close = difflib.get_close_matches(str(value), list(map(str, allowed)), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of: "
                          f"{', '.join(map(str, allowed))}{hint}")


def check_bound(key: str, value: Any, op: str, bound: float) -> None:
    if not (value >= bound if op == ">=" else value > bound):
        raise ConfigError(f"{key}={value!r} is not allowed; it must be {op} {bound}")


SPLITS = ("train", "test")
LOGGER_MODES = ("offline", "online", "disabled")
OPTIMIZER_IMPLS = ("auto", "fused", "foreach", "loop")
# string keys with a fixed set of values (names of parts are checked against their registries)
SEED_RULES = ("list", "auto")
D_BATCHES = ("separate", "joint", "joint_inconsistent")
FIXED_CHOICES = {"data.split": SPLITS, "eval.real_split": SPLITS, "logger.mode": LOGGER_MODES,
                 "train.optimizer_impl": OPTIMIZER_IMPLS, "fanout.seeds": SEED_RULES,
                 "norm.d_batches": D_BATCHES}


@functools.cache
def bounds(cls: type = Config, prefix: str = "") -> dict[str, tuple[str, float]]:
    """`key -> (">=" or ">", bound)` of every bounded field of the schema."""
    out = {}
    for f in dataclasses.fields(cls):
        key, kind = f"{prefix}{f.name}", typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(kind):
            out.update(bounds(kind, f"{key}."))
        for name, op in (("at_least", ">="), ("above", ">")):
            if name in f.metadata:
                out[key] = (op, f.metadata[name])
    return out


def validate(cfg: DictConfig | Config) -> None:
    """Check the rules that one field's type cannot express; raise ConfigError.

    Names are checked against the registries of the parts by ganlab.configure.check."""
    for key, allowed in FIXED_CHOICES.items():
        choice(key, select(cfg, key), allowed)
    for key, (op, bound) in bounds().items():
        check_bound(key, select(cfg, key), op, bound)
    if not 0 < cfg.labels.fraction <= 1:
        raise ConfigError(f"labels.fraction={cfg.labels.fraction!r} is not allowed; "
                          "it must be in (0, 1]")
    for key in ("train.betas_g", "train.betas_d"):
        betas = list(select(cfg, key))
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ConfigError(f"{key}={betas!r} is not allowed; it must be two numbers in [0, 1)")

    if not 0 <= cfg.eval.ema < 1:
        raise ConfigError(f"eval.ema={cfg.eval.ema!r} is not allowed; it is the decay of the "
                          "average of G's weights and must be in [0, 1) (0: score G itself; "
                          "e.g. 0.999)")

    real, fake = cfg.smoothing.real_target, cfg.smoothing.fake_target
    if not 0 < real <= 1:
        raise ConfigError(f"smoothing.real_target={real!r} is not allowed; "
                          "it is 1 - alpha and must be in (0, 1]")
    if not 0 <= fake < 1:
        raise ConfigError(f"smoothing.fake_target={fake!r} is not allowed; "
                          "it is beta and must be in [0, 1)")
    if not fake < real:
        raise ConfigError(f"smoothing.fake_target={fake!r} is not allowed with "
                          f"smoothing.real_target={real!r}; beta must be < 1 - alpha")

    if cfg.fanout.seeds_max < cfg.fanout.seeds_min:
        raise ConfigError(f"fanout.seeds_max={cfg.fanout.seeds_max!r} is not allowed with "
                          f"fanout.seeds_min={cfg.fanout.seeds_min!r}; it must be >= "
                          "fanout.seeds_min")
    for name, size in cfg.study.smallest_effect.items():
        _check_effect(f"study.smallest_effect.{name}", size)

    device = cfg.train.device
    if not (device in ("auto", "cpu", "cuda") or (device.startswith("cuda:")
                                                   and device[5:].isdigit())):
        raise ConfigError(f"train.device={device!r} is not allowed; "
                          "choose one of: auto, cpu, cuda, cuda:N")


def _check_effect(key: str, size: Any) -> None:
    text = str(size).strip()
    try:
        ok = float(text.removesuffix("%")) > 0
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"{key}={size!r} is not allowed; give a positive change in the "
                          "metric's units (e.g. 1) or a percentage of the baseline (e.g. 5%)")


def select(cfg: Any, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def data_root(cfg_root: str) -> str:
    return os.path.abspath(os.path.expanduser(cfg_root))


CONF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


def group_options(group: str) -> list[str]:
    """The options of a config group: the YAML files of conf/<group>/, sorted."""
    return sorted(os.path.splitext(name)[0] for name in os.listdir(os.path.join(CONF_DIR, group))
                  if name.endswith(".yaml"))
