"""Typed configuration: the schema of every config group, and the one `validate(cfg)`.

The dataclasses are the schema (registered in Hydra's ConfigStore, so a typo or a wrong
type fails at composition); the YAML files under `conf/` hold the values. Rules that span
several fields live in `validate`, which raises `ConfigError` naming the key, the value and
what is allowed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

# The allowed values of every choice. Registries elsewhere must agree (tests check it).
DATASETS = ("ring8", "grid25", "mnist", "fashion_mnist", "cifar10")
MODELS = ("mlp", "dcgan")
LOSSES = ("minimax", "non_saturating")
NORMS = ("none", "batch", "reference", "virtual")
LABEL_MODES = ("none", "conditional", "auxiliary", "kplus1")
LOGGERS = ("wandb", "none")
LOGGER_MODES = ("offline", "online", "disabled")


class ConfigError(ValueError):
    """Invalid user input; the message names the key, the value and what is allowed."""


@dataclass
class DataConfig:
    name: str = MISSING  # one of DATASETS
    # Where image datasets live (<root>/MNIST/raw/...); toy data ignores it.
    root: str = "${oc.env:GANLAB_DATA_ROOT,'~/.cache/ganlab/data'}"
    split: str = "train"  # the split G is trained on (and real statistics come from)
    download: bool = True  # fetch missing image files when the network allows
    num_classes: int = 0  # labels the dataset carries (mode index for toy mixtures)
    image_size: int = 0  # 0 for 2-D toy data
    channels: int = 0  # 0 for 2-D toy data


@dataclass
class ModelConfig:
    name: str = MISSING  # one of MODELS
    z_dim: int = 64  # latent size
    g_width: int = 64  # G base width: hidden units (mlp) or channels (dcgan)
    d_width: int = 64  # D base width; d_width / g_width is the capacity ratio
    width_ratio: float = 1.0  # d_width defaults to round(g_width * width_ratio)
    depth: int = 3  # hidden layers of the mlp (dcgan depth follows the image size)


@dataclass
class LossConfig:
    name: str = MISSING  # one of LOSSES: G's half of the game (tutorial §3.2.3)


@dataclass
class SmoothingConfig:
    name: str = "none"  # preset the values came from; the values are what counts
    real_target: float = 1.0  # D's target on real data, 1 - alpha
    fake_target: float = 0.0  # D's target on generated data, beta


@dataclass
class NormConfig:
    g: str = "none"  # one of NORMS, in every hidden layer of G
    d: str = "none"  # one of NORMS, in D's hidden layers (not its input layer)
    split_real_fake: bool = False  # D normalises real and fake as separate batches
    ref_batch_size: int = 64  # N: the fixed reference batch of reference/virtual norm


@dataclass
class LabelsConfig:
    name: str = "none"  # one of LABEL_MODES
    fraction: float = 1.0  # share of real samples whose label D sees (kplus1 may use < 1)


@dataclass
class MinibatchDiscriminationConfig:
    kernels: int = 0  # B: minibatch features appended to D's features (0: off)
    dims: int = 5  # C: dimensions of each kernel's projection


@dataclass
class ExtrasConfig:
    # Salimans et al. 2016 §3.2 and §3.3, the "-MBF" and "-L+HA" rows of its Table 3
    minibatch_discrimination: MinibatchDiscriminationConfig = field(
        default_factory=MinibatchDiscriminationConfig)
    historical_averaging: float = 0.0  # weight of ||theta - mean past theta||^2 (0: off)


@dataclass
class TrainConfig:
    steps: int = 2000  # training rounds (k D updates then g_steps G updates each)
    batch_size: int = 64
    d_steps: int = 1  # k: D updates per G update
    g_steps: int = 1  # G updates per round
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas_g: list[float] = field(default_factory=lambda: [0.5, 0.999])
    betas_d: list[float] = field(default_factory=lambda: [0.5, 0.999])
    checkpoint_every: int = 500  # G steps between checkpoints (0: only at the end)
    log_every: int = 50  # G steps between loss logs and the divergence check
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    progress: bool = True  # progress bar on a terminal


@dataclass
class EvalConfig:
    every: int = 500  # G steps between evaluations (0: only at the end)
    num_samples: int = 2500  # generated samples per evaluation
    batch_size: int = 500  # generation batch size during evaluation
    hq_std: float = 3.0  # 2-D: a sample is high-quality within hq_std stds of its mode
    mode_min_count: int = 1  # 2-D: HQ samples a mode needs to count as covered
    grid_size: int = 64  # samples in the saved image grid
    # images: FID / IS / KID / precision-recall (ganlab.evaluate)
    features: str = "auto"  # auto | classifier | inception | none (auto: classifier on
    #                          MNIST-like data, inception otherwise; none: no image metrics)
    inception_weights: str | None = None  # local FID InceptionV3 weights (offline use)
    final_num_samples: int = 10000  # generated images for the final scores
    real_split: str = "test"  # the real reference set
    real_num_samples: int = 10000
    is_splits: int = 10
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    pr_k: int = 3  # k-th neighbour radius of improved precision/recall
    classifier_epochs: int = 2  # training of the classifier feature extractor


@dataclass
class LoggerConfig:
    name: str = "wandb"  # one of LOGGERS
    mode: str = "offline"  # one of LOGGER_MODES; online needs `wandb login`
    project: str = "ganlab"
    entity: str | None = None
    group: str | None = None  # defaults to the sweep cell (overrides without the seed)
    tags: list[str] = field(default_factory=list)


@dataclass
class FanoutConfig:
    # How `launcher=local` spreads a sweep over one machine (see conf/launcher/local.yaml).
    runs_per_gpu: int = 2  # small runs packed on each GPU
    n_jobs: int = 2  # runs at a time on a machine without GPUs
    gpus: int | None = None  # GPUs to schedule on (None: all visible ones)
    # launcher=ray: the cluster to join, and each run's share of a GPU there
    ray_address: str = "${oc.env:RAY_ADDRESS,auto}"
    gpu_share: float = 1.0


@dataclass
class StudyConfig:
    # What an experiment preset asks; carried into result.json for the comparer.
    name: str = ""
    question: str = ""
    variant: str = ""  # a named row of the preset (e.g. the ablations of salimans2016)
    # The baseline variant of each comparison class, as "key=value,key=value" over the
    # trick (or hparam) keys of result.json, e.g. "labels=none".
    baselines: list[str] = field(default_factory=list)


@dataclass
class Config:
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    loss: LossConfig = MISSING
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    norm: NormConfig = field(default_factory=NormConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    extras: ExtrasConfig = field(default_factory=ExtrasConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    fanout: FanoutConfig = field(default_factory=FanoutConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    seed: int = 0


def register_configs() -> None:
    # One schema for the whole tree: each group's YAML merges into its typed field, so an
    # unknown key or a wrong type fails at composition.
    ConfigStore.instance().store(name="config_schema", node=Config)


def _sweep_cell(override_dirname: str) -> str:
    # Hydra's override_dirname is empty when only the seed was swept; a sweep subdir
    # must still be a relative name.
    return override_dirname or "base"


def _visible_gpus(gpus: int | None) -> int:
    if gpus is not None:
        return int(gpus)
    import torch

    return torch.cuda.device_count()


def _ray_gpus(gpus: int | None) -> int | None:
    # None lets Ray detect the GPUs itself; a number declares them (logical GPUs in tests)
    return None if gpus is None else int(gpus)


def _ray_cpus(n_jobs: int, gpus: int | None, runs_per_gpu: int) -> int:
    n = _visible_gpus(gpus)
    return n * runs_per_gpu if n else n_jobs


def _gpu_share(gpus: int | None, runs_per_gpu: int) -> float:
    return 1.0 / runs_per_gpu if _visible_gpus(gpus) else 0.0


def _scale(width: int, ratio: float) -> int:
    return max(1, round(width * ratio))


for _name, _fn in (("ganlab.cell", _sweep_cell), ("ganlab.ray_gpus", _ray_gpus),
                   ("ganlab.ray_cpus", _ray_cpus), ("ganlab.gpu_share", _gpu_share),
                   ("ganlab.scale", _scale)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of: {', '.join(allowed)}")


def _positive(key: str, value: Any, minimum: float = 1) -> None:
    if value < minimum:
        raise ConfigError(f"{key}={value!r} is not allowed; it must be >= {minimum}")


def validate(cfg: DictConfig | Config) -> None:
    """Check every rule that one field's type cannot express; raise ConfigError."""
    _choice("data", cfg.data.name, DATASETS)
    _choice("model", cfg.model.name, MODELS)
    _choice("loss", cfg.loss.name, LOSSES)
    _choice("norm.g", cfg.norm.g, NORMS)
    _choice("norm.d", cfg.norm.d, NORMS)
    _choice("labels", cfg.labels.name, LABEL_MODES)
    _choice("logger", cfg.logger.name, LOGGERS)
    _choice("logger.mode", cfg.logger.mode, LOGGER_MODES)
    _choice("data.split", cfg.data.split, ("train", "test"))
    _choice("eval.features", cfg.eval.features, ("auto", "classifier", "inception", "none"))
    _choice("eval.real_split", cfg.eval.real_split, ("train", "test"))

    is_toy = cfg.data.name in ("ring8", "grid25")
    if is_toy and cfg.model.name != "mlp":
        raise ConfigError(f"model={cfg.model.name!r} does not fit data={cfg.data.name!r}; "
                          "2-D toy data needs model=mlp")
    if not is_toy and cfg.model.name != "dcgan":
        raise ConfigError(f"model={cfg.model.name!r} does not fit data={cfg.data.name!r}; "
                          "image data needs model=dcgan")
    if not is_toy and cfg.data.image_size not in (28, 32):
        raise ConfigError(f"data.image_size={cfg.data.image_size!r} is not allowed; "
                          "dcgan supports 28 or 32")

    for key in ("model.z_dim", "model.g_width", "model.d_width", "model.depth",
                "train.steps", "train.batch_size", "train.d_steps", "train.g_steps",
                "train.log_every", "eval.num_samples", "eval.batch_size",
                "eval.mode_min_count", "norm.ref_batch_size", "eval.final_num_samples",
                "eval.real_num_samples", "eval.is_splits", "eval.kid_subsets",
                "eval.kid_subset_size", "eval.pr_k", "eval.classifier_epochs",
                "extras.minibatch_discrimination.dims"):
        _positive(key, _attr(cfg, key))
    for key in ("train.checkpoint_every", "eval.every", "eval.grid_size",
                "extras.minibatch_discrimination.kernels"):
        _positive(key, _attr(cfg, key), minimum=0)
    if cfg.train.batch_size < 2 and "batch" in (cfg.norm.g, cfg.norm.d):
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} is not allowed with "
                          "batch norm; it must be >= 2")
    if cfg.extras.historical_averaging < 0:
        raise ConfigError(f"extras.historical_averaging={cfg.extras.historical_averaging!r} "
                          "is not allowed; it must be >= 0 (0: off)")

    labels, fraction = cfg.labels.name, cfg.labels.fraction
    if labels != "none" and cfg.data.num_classes < 2:
        raise ConfigError(f"labels={labels!r} needs a labelled dataset, and data={cfg.data.name!r} "
                          f"has data.num_classes={cfg.data.num_classes}; use labels=none")
    if not 0 < fraction <= 1:
        raise ConfigError(f"labels.fraction={fraction!r} is not allowed; it must be in (0, 1]")
    if fraction < 1 and labels != "kplus1":
        raise ConfigError(f"labels.fraction={fraction!r} is not allowed with labels={labels!r}; "
                          "only labels=kplus1 trains with partly labelled data")

    for key in ("train.lr_g", "train.lr_d"):
        if not _attr(cfg, key) > 0:
            raise ConfigError(f"{key}={_attr(cfg, key)!r} is not allowed; it must be > 0")
    for key in ("train.betas_g", "train.betas_d"):
        betas = list(_attr(cfg, key))
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ConfigError(f"{key}={betas!r} is not allowed; it must be two numbers in [0, 1)")
    if not cfg.eval.hq_std > 0:
        raise ConfigError(f"eval.hq_std={cfg.eval.hq_std!r} is not allowed; it must be > 0")

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

    device = cfg.train.device
    if not (device in ("auto", "cpu", "cuda") or (device.startswith("cuda:")
                                                   and device[5:].isdigit())):
        raise ConfigError(f"train.device={device!r} is not allowed; "
                          "choose one of: auto, cpu, cuda, cuda:N")


def _attr(cfg: Any, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def data_root(cfg_root: str) -> str:
    return os.path.abspath(os.path.expanduser(cfg_root))


CONF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


def compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The config `python -m ganlab.train OVERRIDES` would run (for tests, benches, tools)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))
