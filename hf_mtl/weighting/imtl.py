"""`imtl`: IMTL-G, the gradient half of impartial multi-task learning (Liu et al. 2021, "Towards
Impartial Multi-task Learning", ICLR).

The update d = Σ_i α_i g_i, Σ_i α_i = 1, is the combination whose projections onto every task's unit
gradient u_i = g_i/‖g_i‖ are equal: dᵀu_1 = … = dᵀu_K. The paper's closed form,
α_{2:K} = g_1 Uᵀ(D Uᵀ)⁻¹ with D and U the differences g_1 − g_i and u_1 − u_i, is the same as the
Gram-matrix form (torchjd's `IMTLG`, which extends it to linearly dependent gradients)

    G α ∝ n,  n_i = ‖g_i‖ = √G_ii   ⇒   α = G⁺n / 1ᵀG⁺n,

since (Gα)_i = g_iᵀd = ‖g_i‖ · dᵀu_i. G⁺ is the pseudo-inverse (eigenvalues under λ_max·K·ε(float32)
treated as 0); when 1ᵀG⁺n vanishes the update is 0, as in torchjd.

The direction does not change when one task's loss is multiplied by c > 0 (u_i does not change), its
length does (Σα = 1 is a constraint on the scaled rows). The common projection is 1/1ᵀG⁺n, which can be
negative for strongly conflicting gradients: IMTL-G does not promise a non-conflicting update.
Solver: closed form (one pseudo-inverse of the K × K Gram matrix).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .gram import GRAM_RELATIVE_EPS, GramAggregator
from .registry import register


@register
class IMTLGWeighting(GramAggregator):
    """IMTL-G: equal projections of the update onto every task's unit gradient, weights summing to 1."""

    name = "imtl"
    description = "IMTL-G (Liu et al. 2021): update with equal projections on every task's unit gradient (closed form)"

    def gram_weights(self, gram: np.ndarray, losses: Sequence[float]) -> np.ndarray:
        norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
        v = np.linalg.pinv(gram, rcond=len(gram) * GRAM_RELATIVE_EPS, hermitian=True) @ norms
        total = v.sum()
        return v / total if abs(total) > 1e-12 else np.zeros_like(v)
