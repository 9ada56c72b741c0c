"""`power`: the generalized (power) mean of the task losses, `--gamma γ`.

    F = M_γ(L) = ((1/K) Σ_i L_i^γ)^(1/γ),    M_0 = (Π_i L_i)^(1/K)  (the γ → 0 limit)
    dF/dL_i = (1/K) · L_i^(γ−1) · F^(1−γ)    (log h_i = (γ−1) log L_i,  log c = −log K + (1−γ) log F)

γ = 1 is `equal`, γ = 0 the geometric mean (same direction as `geometric`), γ → +∞ the max and γ → −∞
the min of the losses; M_γ is non-decreasing in γ, so γ moves the emphasis from the easiest to the
hardest task. Su, "Chatting about Multi-Task Learning (I): In the Name of Loss" (2022,
https://kexue.fm/archives/8870), section on the generalized mean, which unifies these choices.

Everything is computed from x_i = log L_i: log F = log-sum-exp(γ x) / γ − log K / γ, so |γ| = 200 with
losses from 1e-8 to 1e8 neither overflows nor divides by zero. Stateless.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .base import Weighting, WeightingConfig
from .registry import register


def log_power_mean(log_losses: torch.Tensor, gamma: float) -> torch.Tensor:
    """log M_γ(L) from x = log L (1-D), differentiable, finite for any finite γ and finite x."""
    if gamma == 0:
        return log_losses.mean()
    centered = gamma * (log_losses - log_losses.mean())
    if centered.abs().max() <= 1:
        # Near the geometric limit log-sum-exp − log K cancels down to O(γ²) and loses its digits
        # (γ = 1e-9 would keep none); expm1/log1p of the centred values keep them.
        return log_losses.mean() + torch.log1p(torch.expm1(centered).mean()) / gamma
    # Not centred here: the centring's −1/K in the gradient would cancel against the softmax and
    # swamp the weight of a task whose loss is orders of magnitude below the others.
    return (torch.logsumexp(gamma * log_losses, dim=0) - math.log(log_losses.numel())) / gamma


@register
class PowerWeighting(Weighting):
    """F = ((1/K) Σ_i L_i^γ)^(1/γ) with γ = `--gamma` (any finite number; 0 = geometric mean)."""

    name = "power"
    description = "generalized mean ((1/K) Σ L_i^γ)^(1/γ), --gamma γ (1 = equal, 0 = geometric, ±∞ = max/min)"
    log_based = True

    @dataclass
    class Config(WeightingConfig):
        gamma: float = field(
            default=0.5,
            metadata={"help": "Exponent of the `power` weighting: 1 = arithmetic mean, 0 = geometric, +inf = max, -inf = min."},
        )

        def __post_init__(self) -> None:
            super().__post_init__()
            try:
                gamma = float(self.gamma)
            except (TypeError, ValueError):
                gamma = math.nan
            if not math.isfinite(gamma):
                raise ValueError(
                    f"--gamma {self.gamma} is not finite; pass a finite exponent, e.g. --gamma 0.5 (1 = arithmetic "
                    "mean, 0 = geometric; large positive/negative values approach the max/min)."
                )
            self.gamma = gamma

    config: Config

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gamma = self.config.gamma

    def task_log_factor(self, i: int, loss: float) -> float:
        return (self.gamma - 1) * math.log(loss)

    def common_log_factor(self, losses: Sequence[float]) -> float:
        log_f = log_power_mean(torch.log(torch.tensor(losses, dtype=torch.float64)), self.gamma).item()
        return -math.log(self.num_tasks) + (1 - self.gamma) * log_f

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        return torch.exp(log_power_mean(torch.log(losses), self.gamma))

    def hparams(self) -> dict[str, Any]:
        return {"gamma": self.gamma}
