"""`nash_mtl`: Nash-MTL (Navon et al. 2022, "Multi-Task Learning as a Bargaining Game", ICML).

The tasks bargain over the update d = Σ_i α_i g_i; the Nash bargaining solution is characterised by

    G α = 1/α  (element-wise),  α > 0,

so that g_iᵀd = (Gα)_i = 1/α_i > 0: every task improves, and a task with a small gradient gets a large
weight. The solution is unique: it is the minimiser of the strictly convex
f(α) = ½ αᵀGα − Σ_i log α_i, whose gradient is Gα − 1/α. Consequences: ‖d‖² = αᵀGα = K whatever the
scale of the gradients (multiplying all of them by c divides α by c: the update does not change), and
multiplying one task's loss by c > 0 divides that α_i by c and leaves d unchanged too.

Conventions, as the authors' code and torchjd's `NashMTL`: the equation is the paper's, on G itself;
no clipping inside the aggregator: their `max_norm` (1.0) is the trainer's `--max_grad_norm` (also 1.0
by default). The authors' code updates the weights every step by default (`update_weights_every` 1),
as here.

Solver (`gram.alpha_fair_weights` with a = 1, shared with FairGrad): exact, whatever the ratio of the
task gradient norms. With α_i = β_i/‖g_i‖ the equation becomes Cβ = 1/β on the cosine matrix C of the
gradients (unit diagonal), so rows 10⁴× apart in norm are as easy as equal ones; damped Newton on the
convex f (self-concordant: steps of 1/(1 + λ), λ the Newton decrement, stay in β > 0 and converge
globally, quadratically near the solution) from β = 1, to λ < 1e-14. No ridge where a solution exists
(an earlier version added 1e-8·‖G‖_F to the diagonal, which moved the update by ~1e-8·(norm ratio)²:
5e-5 at 100×, 30 % at 10⁴×). The problem has no solution only when a task gradient is 0 (its α_i is
set to 0: it contributes nothing either way) or the gradients are Pareto-stationary (0 in the convex
hull of the unit gradients, to float32 rounding); only then is a ridge of K·ε(float32) added to C, so
the weights stay finite and ‖d‖ ≤ √K. The authors solve a sequence of convex relaxations with cvxpy
instead (20 iterations, stopping at a residual of 1e-3); the fixed point is the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .gram import GramAggregator, alpha_fair_weights
from .registry import register


def nash_weights(gram: np.ndarray) -> np.ndarray:
    """α > 0 with G α = 1/α (0 for a zero row; see the module docstring)."""
    return alpha_fair_weights(gram, 1.0)


@register
class NashMTLWeighting(GramAggregator):
    """The Nash bargaining combination: weights α > 0 with Gα = 1/α."""

    name = "nash_mtl"
    description = "Nash-MTL (Navon et al. 2022): bargaining weights solving G α = 1/α (exact Newton at any gradient scale)"
    weight_degree = 1

    def gram_weights(self, gram: np.ndarray, losses: Sequence[float]) -> np.ndarray:
        return nash_weights(gram)
