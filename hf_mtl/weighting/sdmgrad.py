"""`sdmgrad`: stochastic direction-oriented multi-objective gradient descent (Xiao, Ban & Ji 2023,
"Direction-oriented Multi-objective Learning: Simple and Provable Stochastic Algorithms", NeurIPS).

MGDA's min-norm problem, pulled toward the mean gradient g_0 = (1/K) Σ_i g_i by λ ≥ 0:

    w = argmin_{w ≥ 0, Σ w_i = 1} ½ ‖g_w + λ g_0‖²,   g_w = Σ_i w_i g_i,
    d = (g_w + λ g_0) / (1 + λ)   (weights (w + λ/K) / (1 + λ), summing to 1).

λ = 0 is MGDA; λ → ∞ the mean gradient. Default λ = 0.3 (flag `--sdmgrad_lambda`): the value of the
authors' experiments and LibMTL's `SDMGrad_lamda` (their code's class default is 0.6).

Conventions: the paper's stochastic version estimates the objective from independent mini-batches
(ξ, ξ' for the Gram matrix, ζ for the update: three batches per step); here one batch per task gives
the gradients, so the inner problem is solved on their own Gram matrix (the deterministic SDMGrad).
Solver: exact, on the Gram matrix only: since Σ w_i = 1, g_w + λg_0 = Σ_i w_i (g_i + λg_0), so w is
the min-norm point of the convex hull of the shifted rows g_i + λg_0 (Gram matrix M G Mᵀ,
M = I + λ 11ᵀ/K), solved by NNLS (`gram.min_norm_weights`). The authors and LibMTL run 20 steps of
projected SGD (lr 5, momentum 0.5) from the previous step's w instead, so their w also carries state
across steps; ours is the exact minimiser of each step's problem and has no state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .base import WeightingConfig, check_number
from .gram import GramAggregator, min_norm_weights
from .registry import register


def sdmgrad_weights(gram: np.ndarray, lam: float) -> np.ndarray:
    """(w + λ/K)/(1 + λ) with w the min-norm point of the rows g_i + λg_0 (see the module docstring)."""
    k = len(gram)
    shift = np.eye(k) + lam / k
    w = min_norm_weights(shift @ gram @ shift.T)
    return (w + lam / k) / (1.0 + lam)


@register
class SDMGradWeighting(GramAggregator):
    """MGDA's min-norm combination pulled toward the mean gradient by λ, exactly."""

    name = "sdmgrad"
    description = "SDMGrad (Xiao et al. 2023): min-norm ‖g_w + λ g_0‖ over the simplex, pulled to the mean gradient (--sdmgrad_lambda)"

    @dataclass
    class Config(WeightingConfig):
        sdmgrad_lambda: float = field(
            default=0.3, metadata={"help": "sdmgrad: pull λ toward the mean gradient (0 = MGDA; large = the mean)."}
        )

        def __post_init__(self) -> None:
            super().__post_init__()
            self.sdmgrad_lambda = check_number("sdmgrad_lambda", self.sdmgrad_lambda, lambda v: v >= 0,
                                               "a finite number >= 0 (default 0.3; 0 = MGDA)")

    config: Config

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lam = self.config.sdmgrad_lambda

    def gram_weights(self, gram: np.ndarray, losses: Sequence[float]) -> np.ndarray:
        return sdmgrad_weights(gram, self.lam)

    def hparams(self) -> dict[str, Any]:
        return {"lambda": self.lam}
