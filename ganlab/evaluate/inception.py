"""The FID-standard InceptionV3 (`eval.features=inception`) through torchmetrics and
torch-fidelity: loaded only when asked for, and never downloaded silently offline: a missing
extra or missing weights end in one line saying what to install or pass."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ganlab.config import ConfigError
from ganlab.evaluate.features import Extractor, tensor_sha256

INCEPTION_WEIGHTS_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                         "weights-inception-2015-12-05-6726825d.pth")

INCEPTION_HELP = (
    "eval.features=inception needs (1) the inception extra, torch-fidelity importable "
    "beside your torch (`pip install 'ganlab[inception]'`; it needs a torchvision built for "
    "the same torch), and "
    "(2) the FID InceptionV3 weights: downloaded on first use from " + INCEPTION_WEIGHTS_URL
    + ", or, offline, downloaded elsewhere and given as eval.inception_weights=/path/to/"
    "weights-inception-2015-12-05-6726825d.pth. To score offline without them, use "
    "eval.features=classifier (scores are then comparable only with other classifier scores)."
)


class _InceptionNet(nn.Module):
    """[-1, 1] images -> torch-fidelity InceptionV3 (uint8 RGB, resized inside to 299x299).

    torchmetrics' `NoTrainInceptionV3.forward` returns only the first requested feature;
    its `_torch_fidelity_forward` returns all of them (pool features and logits) in one pass.
    """

    def __init__(self, inception: nn.Module):
        super().__init__()
        self.inception = inception

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u8 = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if u8.shape[1] == 1:
            u8 = u8.expand(-1, 3, -1, -1)
        feats, logits = self.inception._torch_fidelity_forward(u8)
        return feats.reshape(len(x), -1), logits.reshape(len(x), -1)


def load_inception(weights: str | None, device: torch.device) -> Extractor:
    try:
        import torch_fidelity  # noqa: F401
        from torchmetrics.image.fid import NoTrainInceptionV3
    except Exception as e:
        raise ConfigError(f"{INCEPTION_HELP} (import failed: {type(e).__name__}: {e})") from None
    if weights and not Path(weights).is_file():
        raise ConfigError(f"eval.inception_weights={weights!r} is not a file. {INCEPTION_HELP}")
    try:
        # antialias=False: torch-fidelity's TF1-compatible resize, the FID standard
        net = NoTrainInceptionV3(name="inception-v3-compat",
                                 features_list=["2048", "logits_unbiased"],
                                 feature_extractor_weights_path=weights or None,
                                 antialias=False)
    except Exception as e:  # no network, a blocked download, a corrupt file
        raise ConfigError(f"could not load the InceptionV3 weights ({type(e).__name__}: {e}). "
                          f"{INCEPTION_HELP}") from None
    net = _InceptionNet(net).eval().requires_grad_(False).to(device)
    return Extractor("inception", net, tensor_sha256(net.state_dict().values()),
                     preprocessing="uint8 RGB (grey repeated), resized to 299x299 by "
                                   "torch-fidelity's TF1-compatible bilinear interpolation")
