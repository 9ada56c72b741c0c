"""`conflict_free`: ConFIG, conflict-free updates (Liu, Chu & Thuerey 2024, "ConFIG: Towards
Conflict-free Training of Physics Informed Neural Networks", arXiv:2408.11104; torchjd's `ConFIG`).

The direction is the one with equal positive cosine to every task gradient, its length the sum of the
gradients' projections on it (Equation 2 of the paper):

    u_i = g_i / ‖g_i‖,   ĝ = U⁺ 1  (the least-norm x with u_iᵀx = 1 for all i),   g_u = ĝ / ‖ĝ‖,
    d = (Σ_i g_iᵀ g_u) g_u.

With linearly independent gradients every task improves by the same cosine (g_iᵀd > 0); with more
tasks than the rank of the gradients ĝ is the least-squares solution and that is no longer promised.
Gram form: U = D⁻¹J (D = diag ‖g_i‖), so ĝ = Jᵀw with w = D⁻¹ C⁺ 1 (C = D⁻¹GD⁻¹ the cosine
matrix, pseudo-inverse with eigenvalues under λ_max·K·ε(float32) treated as 0), ‖ĝ‖² = wᵀGw and
Σ_i g_iᵀĝ = 1ᵀGw: d = (1ᵀGw / wᵀGw) Jᵀw.

Conventions: the preference vector is 1 (the paper's and torchjd's default), so the length is the sum
of the projections, not their mean. A zero gradient has no direction: its unit row is 0 (torchjd's
`nan_to_num`); if every direction vanishes the update is 0. The paper's momentum variant (M-ConFIG)
is not included. Solver: closed form (one pseudo-inverse of the K × K cosine matrix). No hyperparameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .gram import GRAM_RELATIVE_EPS, GramAggregator, live_cosines
from .registry import register


def config_weights(gram: np.ndarray) -> np.ndarray:
    """Weights of d = (1ᵀGw / wᵀGw) Jᵀw, w = D⁻¹C⁺1 (see the module docstring)."""
    k = len(gram)
    live, n, cosine = live_cosines(gram)
    w = np.zeros(k)
    if not live.any():
        return w
    w[live] = np.linalg.pinv(cosine, rcond=k * GRAM_RELATIVE_EPS, hermitian=True) @ np.ones(len(n)) / n
    squared = float(w @ gram @ w)
    if not squared > 0:
        return np.zeros(k)
    return float(np.sum(gram @ w)) / squared * w


@register
class ConFIGWeighting(GramAggregator):
    """ConFIG: the direction of equal cosine to every task gradient, scaled by the sum of their projections."""

    name = "conflict_free"
    description = "ConFIG (Liu et al. 2024): equal-cosine direction U⁺1, length the sum of the gradients' projections"

    def gram_weights(self, gram: np.ndarray, losses: Sequence[float]) -> np.ndarray:
        return config_weights(gram)
