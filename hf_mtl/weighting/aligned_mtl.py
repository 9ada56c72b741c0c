"""`aligned_mtl`: Aligned-MTL (Senushkin et al. 2023, "Independent Component Alignment for Multi-Task
Learning", CVPR).

Conflicts and dominance show up as a badly conditioned gradient matrix J (K × P). Aligned-MTL replaces
J by the closest matrix with condition number 1, whose rows are orthogonal and of equal length σ_min,
and combines those rows. With J = U Σ Vᵀ (U, Σ from the eigendecomposition G = J Jᵀ = U Σ² Uᵀ,
eigenvalues below λ_max·K·ε(float32) dropped as rank deficiency):

    J̃ = σ_min U Vᵀ = B J,   B = σ_min U Σ⁻¹ Uᵀ,   d = J̃ᵀw = Jᵀ(B w),   w = 1/K (uniform preferences).

Conventions: the scale is σ_min, the smallest retained singular value (the paper; torchjd's default
`scale_mode="min"`); the preferences are 1/K as in torchjd, so that orthogonal gradients of equal
length give the mean gradient, like `equal` (the authors' code sums, w = 1: a factor K). If every
gradient is 0, B = I (the update is 0). Solver: closed form (one symmetric eigendecomposition of the
K × K Gram matrix).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .gram import GRAM_RELATIVE_EPS, GramAggregator
from .registry import register


def balance_transformation(gram: np.ndarray) -> np.ndarray:
    """B = σ_min U Σ⁻¹ Uᵀ over the numerically non-zero eigenvalues of G (I if there are none)."""
    eigenvalues, vectors = np.linalg.eigh(gram)
    keep = eigenvalues > eigenvalues.max() * len(gram) * GRAM_RELATIVE_EPS
    if not keep.any():
        return np.eye(len(gram))
    eigenvalues, vectors = eigenvalues[keep], vectors[:, keep]
    return np.sqrt(eigenvalues.min()) * (vectors / np.sqrt(eigenvalues)) @ vectors.T


@register
class AlignedMTLWeighting(GramAggregator):
    """The combination of the rows of the condition-number-1 alignment of the gradient matrix."""

    name = "aligned_mtl"
    description = "Aligned-MTL (Senushkin et al. 2023): align the gradient matrix to condition number 1, then average"

    def gram_weights(self, gram: np.ndarray, losses: Sequence[float]) -> np.ndarray:
        k = len(gram)
        return balance_transformation(gram) @ np.full(k, 1.0 / k)
