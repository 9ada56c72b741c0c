"""`cagrad`: conflict-averse gradient descent (Liu et al. 2021, "Conflict-Averse Gradient Descent for
Multi-task Learning", NeurIPS).

CAGrad looks for the update that improves the worst task most while staying near the mean gradient
g_0 = (1/K) Σ_i g_i:

    max_d min_i g_iᵀd   subject to   ‖d − g_0‖ ≤ c‖g_0‖.

Its dual over the simplex is min_w F(w) = g_wᵀg_0 + c‖g_0‖·‖g_w‖ with g_w = Σ_i w_i g_i (only Gram
entries: g_wᵀg_0 = wᵀG1/K, ‖g_w‖² = wᵀGw), and the update is

    d = g_0 + λ g_w,   λ = c‖g_0‖ / ‖g_w‖,   i.e. weights 1/K + λw.

c = 0 gives the mean gradient; larger c moves toward MGDA-like conflict avoidance. Default c = 0.4
(flag `--cagrad_c`; the paper uses 0.4 on NYUv2 and 0.5 elsewhere). Conventions: no final rescaling,
as in the paper's Algorithm 1 and torchjd's `CAGrad` (the authors' code divides d by 1 + c² by
default); if the dual optimum has g_w = 0 (0 is in the convex hull and no direction helps every task;
numerically ‖g_w‖ < 1e-4·‖J‖_F, torchjd's threshold) the update is g_0, as in the authors' code
(torchjd returns 0 there).

Solver: exact up to rounding, on the Gram matrix only. At the optimum, ∇F(w) = J(g_0 + λ g_w) with
λ = c‖g_0‖/‖g_w‖, which are also the optimality conditions of the convex QP min_w g_wᵀg_0 + (λ/2)‖g_w‖²
over the simplex, i.e. the min-norm point of the convex hull of the shifted rows g_i + g_0/λ (Gram
matrix M G Mᵀ, M = I + 11ᵀ/(Kλ); `gram.min_norm_weights`, exact NNLS). What remains is the scalar
equation λ‖g_w(λ)‖ = c‖g_0‖, bracketed by closed-form bounds and solved by `scipy.optimize.brentq`;
any root is a KKT point of the convex dual, hence optimal (duality gap ~1e-16). The authors run SLSQP
on F instead (gap ~1e-7 relative), torchjd CLARABEL through cvxpy (~1e-6).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import brentq

from .base import WeightingConfig, check_number
from .gram import GramAggregator, min_norm_weights
from .registry import register

#: ‖g_w‖ below this (G normalised to trace 1, as torchjd's `norm_eps`) counts as 0: the dual optimum
#: is then Pareto-stationary, and a multiplier λ = c‖g_0‖/‖g_w‖ beyond it would only amplify rounding.
STATIONARY_NORM = 1e-4


def cagrad_weights(gram: np.ndarray, c: float) -> np.ndarray:
    """Weights 1/K + λw of d = g_0 + λ g_w (see the module docstring)."""
    k = len(gram)
    mean = np.full(k, 1.0 / k)
    radius = c * math.sqrt(max(float(mean @ gram @ mean), 0.0))  # c‖g_0‖
    if radius == 0.0:
        return mean

    def hull_weights(lam: float) -> np.ndarray:  # w(λ): min-norm point of the rows g_i + g_0/λ
        shift = np.eye(k) + 1.0 / (k * lam)
        return min_norm_weights(shift @ gram @ shift.T)

    def excess(lam: float) -> float:
        w = hull_weights(lam)
        return lam * math.sqrt(max(float(w @ gram @ w), 0.0)) - radius

    # Below `low`, λ‖g_w‖ <= λ·max‖g_i‖ < c‖g_0‖. Above 2c‖g_0‖/‖g_mgda‖, λ‖g_w‖ >= λ‖g_mgda‖ > c‖g_0‖
    # (g_w lies in the hull, whose min-norm point is MGDA's).
    low = radius / (2.0 * math.sqrt(float(np.diag(gram).max())))
    mgda = min_norm_weights(gram)
    high = 2.0 * radius / max(math.sqrt(max(float(mgda @ gram @ mgda), 0.0)), STATIONARY_NORM)
    if excess(high) <= 0.0:
        return mean
    lam = brentq(excess, low, high, xtol=1e-15 * high)
    return mean + lam * hull_weights(lam)


@register
class CAGradWeighting(GramAggregator):
    """The update within c‖g_0‖ of the mean gradient that maximises the smallest task improvement."""

    name = "cagrad"
    description = "CAGrad (Liu et al. 2021): best worst-task improvement within c·‖g_0‖ of the mean gradient (--cagrad_c)"

    @dataclass
    class Config(WeightingConfig):
        cagrad_c: float = field(default=0.4, metadata={"help": "cagrad: conflict-aversion radius c."})

        def __post_init__(self) -> None:
            super().__post_init__()
            self.cagrad_c = check_number("cagrad_c", self.cagrad_c, lambda v: v >= 0,
                                         "a finite number >= 0 (default 0.4; 0 = the mean gradient)")

    config: Config

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.c = self.config.cagrad_c

    def gram_weights(self, gram: np.ndarray, losses: Sequence[float]) -> np.ndarray:
        return cagrad_weights(gram, self.c)

    def hparams(self) -> dict[str, Any]:
        return {"c": self.c}
