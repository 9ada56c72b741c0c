"""`nash_mtl`: Nash-MTL (Navon et al. 2022, "Multi-Task Learning as a Bargaining Game", ICML).

The tasks bargain over the update d = Σ_i α_i g_i; the Nash bargaining solution is characterised by

    G α = 1/α  (element-wise),  α > 0,

so that g_iᵀd = (Gα)_i = 1/α_i > 0: every task improves, and a task with a small gradient gets a large
weight. The solution is unique: it is the minimiser of the strictly convex
f(α) = ½ αᵀGα − Σ_i log α_i, whose gradient is Gα − 1/α. Consequences: ‖d‖² = αᵀGα = K whatever the
scale of the gradients (multiplying all of them by c divides α by c: the update does not change), and
multiplying one task's loss by c > 0 divides that α_i by c and leaves d unchanged too.

Conventions, as the authors' code and torchjd's `NashMTL`: the equation is the paper's, on G itself
(they divide G by its Frobenius norm for conditioning and multiply it back in the constraints; so does
this solver); no clipping inside the aggregator: their `max_norm` (1.0) is the trainer's
`--max_grad_norm` (also 1.0 by default). A ridge of 1e-8·‖G‖_F is added to the diagonal so that a
solution exists even when some gradient is zero or the gradients are Pareto-stationary (0 in their
convex hull): such tasks then get large but finite weights, and ‖d‖ ≤ √K still holds.

Solver: damped Newton on f (f is self-concordant, so steps of 1/(1 + λ), λ the Newton decrement,
stay in α > 0 and converge globally, quadratically near the solution), started from the diagonal
solution α_i = 1/√G_ii, until λ < 1e-10 or 200 iterations, on G/‖G‖_F. The authors solve a sequence
of convex relaxations with cvxpy instead (20 iterations, stopping at a residual of 1e-3); the fixed
point is the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .gram import GramAggregator
from .registry import register

RIDGE = 1e-8
MAX_ITERATIONS = 200
DECREMENT_TOLERANCE = 1e-10


def nash_weights(gram: np.ndarray) -> np.ndarray:
    """α > 0 with (G + ridge·‖G‖_F·I) α = 1/α (damped Newton on G/‖G‖_F; see the module docstring)."""
    frobenius = float(np.linalg.norm(gram))
    matrix = gram / frobenius + RIDGE * np.eye(len(gram))
    alpha = 1.0 / np.sqrt(np.diag(matrix))
    for _ in range(MAX_ITERATIONS):
        gradient = matrix @ alpha - 1.0 / alpha
        step = np.linalg.solve(matrix + np.diag(alpha**-2.0), gradient)
        decrement = float(np.sqrt(max(gradient @ step, 0.0)))
        alpha = alpha - step / (1.0 + decrement)
        if decrement < DECREMENT_TOLERANCE:
            break
    return alpha / np.sqrt(frobenius)  # (G/‖G‖_F) α̂ = 1/α̂  ⇔  G α = 1/α for α = α̂/√‖G‖_F


@register
class NashMTLWeighting(GramAggregator):
    """The Nash bargaining combination: weights α > 0 with Gα = 1/α."""

    name = "nash_mtl"
    description = "Nash-MTL (Navon et al. 2022): bargaining weights solving G α = 1/α (Newton on K variables)"
    weight_degree = 1

    def gram_weights(self, gram: np.ndarray, losses: Sequence[float]) -> np.ndarray:
        return nash_weights(gram)
