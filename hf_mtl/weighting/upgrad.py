"""`upgrad`: unconflicting projection of gradients (Quinton & Rey 2024, "Jacobian Descent for
Multi-Objective Optimization", arXiv:2406.16232; torchjd's `UPGrad`).

Each task gradient is projected onto the dual cone of all of them, C = {x : g_jᵀx ≥ 0 for every j},
and the projections are averaged:

    d = (1/K) Σ_i π_C(g_i),   π_C(g_i) = argmin_{x ∈ C} ‖x − g_i‖.

Every π_C(g_i) lies in C, so d does too: no task gradient has a negative inner product with the
update. The mean (torchjd's default uniform preference) makes d equal to the mean gradient whenever no
two tasks conflict. By the paper's Proposition 1, π_C(Jᵀu) = Jᵀv with v = argmin_{v ≥ u} vᵀGv, so
d = Jᵀ Σ_i v^(i) with u = e_i/K.

Solver: exact, on the Gram matrix only: each of the K box-constrained QPs is a non-negative
least-squares problem solved by `scipy.optimize.nnls` (`gram.dual_cone_weights`). torchjd solves the
same QPs with quadprog after adding 1e-4 to the diagonal of the normalised Gram matrix; this module
adds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .gram import GramAggregator, dual_cone_weights
from .registry import register


@register
class UPGradWeighting(GramAggregator):
    """The mean of the task gradients, each projected onto the dual cone of all task gradients."""

    name = "upgrad"
    description = "UPGrad (Quinton & Rey 2024): mean of each task gradient projected onto the dual cone of all (non-conflicting)"

    def gram_weights(self, gram: np.ndarray, losses: Sequence[float]) -> np.ndarray:
        k = len(gram)
        return dual_cone_weights(gram, np.eye(k) / k).sum(0)
