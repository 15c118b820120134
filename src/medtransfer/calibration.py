"""Post-hoc changes to a trained network's probabilities: temperature scaling (Guo et al. 2017)
and test-time augmentation (TTA), both off by default.

The network's outputs ("scores": logits, or log-probabilities where only probabilities exist, as
a features classifier gives) for the original image and each named transform are stacked as
``(views, N, C)``; the probabilities are the average over views of ``softmax(scores / T)``
(``sigmoid`` for a single-logit binary head). One temperature ``T`` is fitted on the validation
images by L-BFGS on the negative log-likelihood. :class:`PosthocModel` computes the same in its
``forward``, so predict and export apply exactly what the evaluation measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from sklearn.metrics import brier_score_loss
from torch import Tensor, nn

from medtransfer.config import check_choice
from medtransfer.errors import ConfigError, DataError
from medtransfer.evaluate import expected_calibration_error

__all__ = ["TTA_TRANSFORMS", "EvaluateConfig", "PosthocModel", "calibration_metrics", "fit_temperature",
           "posthoc_log_proba", "tta_views"]

TTA_TRANSFORMS: dict[str, Callable[[Tensor], Tensor]] = {
    "hflip": lambda x: torch.flip(x, dims=(3,)),  # mirrored left-right
    "vflip": lambda x: torch.flip(x, dims=(2,)),  # mirrored top-bottom
    "rot180": lambda x: torch.flip(x, dims=(2, 3)),  # turned half a circle
}


@dataclass(frozen=True)
class EvaluateConfig:
    """How every cell's network is evaluated after training, alike for every arm: ``calibration``
    and ``tta`` change its probabilities (and are stored with it, so predict and export apply
    them); off by default, when every number stays as it was."""

    # none, or temperature: one temperature fitted on the validation images (L-BFGS on the NLL);
    # ECE and Brier are reported before (ece_uncalibrated, brier_uncalibrated) and after
    calibration: Literal["none", "temperature"] = "none"
    # test-time transforms whose probabilities are averaged with the original image's: hflip,
    # vflip, rot180 (empty: off)
    tta: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_choice("evaluate.calibration", self.calibration, ("none", "temperature"))
        object.__setattr__(self, "tta", tuple(self.tta))
        for name in self.tta:
            check_choice("evaluate.tta", name, TTA_TRANSFORMS)
        if len(set(self.tta)) != len(self.tta):
            raise ConfigError(f"'evaluate.tta': got {list(self.tta)}; name each transform once")

    @property
    def on(self) -> bool:
        return self.calibration != "none" or bool(self.tta)

    def key(self) -> dict[str, object]:
        """What enters a unit key: only what is on."""
        out: dict[str, object] = {}
        if self.calibration != "none":
            out["calibration"] = self.calibration
        if self.tta:
            out["tta"] = list(self.tta)
        return out


def tta_views(x: Tensor, tta: Sequence[str]) -> list[Tensor]:
    """``x`` (N, C, H, W) and each named transform of it."""
    return [x, *(TTA_TRANSFORMS[name](x) for name in tta)]


def posthoc_log_proba(scores: Tensor, temperature: Tensor | float = 1.0) -> Tensor:
    """(N, K) log-probabilities averaged over views from ``scores`` (views, N, C): softmax of
    ``scores / T``, or for C == 1 a sigmoid (K = 2)."""
    z = scores / temperature
    logp = torch.cat([nn.functional.logsigmoid(-z), nn.functional.logsigmoid(z)], dim=2) \
        if z.shape[2] == 1 else torch.log_softmax(z, dim=2)
    return torch.logsumexp(logp, dim=0) - math.log(scores.shape[0])


def fit_temperature(scores: np.ndarray, labels: np.ndarray, max_iter: int = 200) -> float:
    """The temperature minimising the NLL of ``labels`` under :func:`posthoc_log_proba`
    (L-BFGS on log T, from T = 1)."""
    s = torch.as_tensor(np.asarray(scores), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if s.ndim != 3 or s.shape[1] != len(y) or not len(y):
        raise DataError(f"fit_temperature: scores {tuple(s.shape)} for {len(y)} labels; expected "
                        "(views, N, C) with N labelled validation images")
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def nll() -> Tensor:
        opt.zero_grad()
        loss = nn.functional.nll_loss(posthoc_log_proba(s, log_t.exp()), y)
        loss.backward()
        return loss

    opt.step(nll)
    t = float(log_t.detach().exp())
    if not math.isfinite(t) or t <= 0:
        raise DataError(f"temperature scaling diverged (T = {t}); the validation set may be too small "
                        "or separated perfectly")
    return t


def calibration_metrics(labels: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Top-label ECE (10 bins) and the Brier score (binary: of the positive class; else the
    multiclass sum over classes, scikit-learn's)."""
    y = np.asarray(labels)
    p = np.asarray(proba, dtype=np.float64)
    if p.shape[1] == 2:
        brier = brier_score_loss(y, p[:, 1], labels=[0, 1])
    else:  # float32 rows can miss 1 by more than scikit-learn tolerates
        brier = brier_score_loss(y, p / p.sum(axis=1, keepdims=True), labels=list(range(p.shape[1])))
    return {"ece": expected_calibration_error(y, p), "brier": float(brier)}


class PosthocModel(nn.Module):
    """``net`` with its TTA and temperature: returns scores whose softmax (sigmoid for one
    column) is :func:`posthoc_log_proba`'s probabilities — ``net``'s own scores divided by
    ``T`` when there is no TTA."""

    def __init__(self, net: nn.Module, tta: Sequence[str] = (), temperature: float = 1.0) -> None:
        super().__init__()
        self.net, self.tta, self.temperature = net, tuple(tta), float(temperature)

    def forward(self, x: Tensor) -> Tensor:
        if not self.tta:
            return self.net(x) / self.temperature
        scores = torch.stack([self.net(v) for v in tta_views(x, self.tta)])
        logp = posthoc_log_proba(scores, self.temperature)
        return logp[:, 1:] - logp[:, :1] if scores.shape[2] == 1 else logp
