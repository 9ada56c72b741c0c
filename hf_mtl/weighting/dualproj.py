"""`dualproj`: the mean gradient projected onto the dual cone of the task gradients (torchjd's
`DualProj`; the projection is Equation 11 of Lopez-Paz & Ranzato 2017, "Gradient Episodic Memory for
Continual Learning", NeurIPS, where it keeps the new task's step from increasing the old tasks' losses).

    d = π_C(g_0),   g_0 = (1/K) Σ_i g_i,   C = {x : g_jᵀx ≥ 0 for every j},
    π_C(g_0) = argmin_{x ∈ C} ‖x − g_0‖.

d lies in C, so no task gradient has a negative inner product with the update; when no task conflicts
with g_0, d = g_0 (the mean, like `equal`). It differs from `upgrad`, which projects each g_i and
averages the projections: DualProj projects the average once. By Quinton & Rey's Proposition 1
(see `upgrad`), π_C(Jᵀu) = Jᵀv with v = argmin_{v ≥ u} vᵀGv, here with u = 1/K.

Conventions: the mean (torchjd's default preference 1/K), not the sum. Solver: exact, one
non-negative least-squares problem on the Gram matrix (`gram.dual_cone_weights`). torchjd solves the
same QP with quadprog after adding 1e-4 to the diagonal of the normalised Gram matrix; this module adds
nothing. No hyperparameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .gram import GramAggregator, dual_cone_weights
from .registry import register


@register
class DualProjWeighting(GramAggregator):
    """The mean task gradient projected onto the dual cone of all task gradients (non-conflicting)."""

    name = "dualproj"
    description = "DualProj (as in torchjd; GEM's projection): the mean gradient projected onto the dual cone of all"

    def gram_weights(self, gram: np.ndarray, losses: Sequence[float]) -> np.ndarray:
        k = len(gram)
        return dual_cone_weights(gram, np.full((1, k), 1.0 / k))[0]
