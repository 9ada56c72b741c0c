"""`mgda`: the multiple-gradient descent direction (Désidéri 2012; Sener & Koltun 2018, "Multi-Task
Learning as Multi-Objective Optimization", NeurIPS).

The update is the min-norm point of the convex hull of the task gradients,

    d = Σ_i α_i g_i,   α = argmin_{α ≥ 0, Σ α_i = 1} ‖Σ_i α_i g_i‖²  (= αᵀGα on the Gram matrix),

which satisfies g_iᵀd ≥ ‖d‖² ≥ 0 for every task (no task's loss increases to first order), and is 0
at a Pareto-stationary point. Sener & Koltun's MGDA-UB applies it to the gradients with respect to the
shared representation as a cheap upper bound; here it runs on the exact gradients of the shared
parameters (the engine's K × P matrix). Their gradient normalisations ("loss", "l2") are compositions
here: `geometric+mgda` runs it on ∇log L_i = g_i / L_i.

Solver: exact for every K, on the K × K Gram matrix only: the simplex QP is rewritten as a
non-negative least-squares problem and solved by `scipy.optimize.nnls` (`gram.min_norm_weights`);
for K = 2 this gives the paper's closed form α_1 = clip((g_2 − g_1)·g_2 / ‖g_1 − g_2‖², 0, 1). The
paper's Frank-Wolfe iteration would only approximate the same point.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .gram import GramAggregator, min_norm_weights
from .registry import register


@register
class MGDAWeighting(GramAggregator):
    """The min-norm element of the convex hull of the task gradients (weights on the simplex)."""

    name = "mgda"
    description = "MGDA (Sener & Koltun 2018): min-norm point of the convex hull of the task gradients (exact NNLS)"

    def gram_weights(self, gram: np.ndarray, losses: Sequence[float]) -> np.ndarray:
        return min_norm_weights(gram)
