"""What the Gram-matrix aggregators share: G = J Jᵀ computed once, and the small solvers on it.

`pcgrad`, `mgda`, `cagrad`, `imtl`, `nash_mtl`, `aligned_mtl` and `upgrad` all return an update Jᵀw, a
combination of the task gradients (the rows of the K × P matrix J over the shared parameters) whose
weights w depend on J only through its Gram matrix G = J Jᵀ (K × K, the inner products of the task
gradients). `GramAggregator.aggregate` computes G once (one matmul in the gradients' dtype, then
float64 on the CPU), asks the method for w, and forms Jᵀw: no K × P buffer beyond the engine's matrix,
and nothing but K × K arrays in the solvers.

When all gradients are multiplied by one c > 0, the weights of every method here are multiplied by
c^(−weight_degree): unchanged (degree 0, the update scales with c) for all but `nash_mtl` (degree 1, its
update keeps the norm √K). `gram_weights` therefore receives G divided by its trace t (the squared
Frobenius norm of J), so the solvers work in a well-scaled range, and its weights are multiplied by
t^(−weight_degree/2): results are the same as on G itself.

Solvers, all exact up to rounding (no iteration count to tune):

* `min_norm_weights(G)`: α = argmin_{α ∈ simplex} αᵀGα, the min-norm point of the convex hull of the
  rows (MGDA). Solved as a non-negative least-squares problem (Lawson & Hanson's least-distance
  programming, "Solving Least Squares Problems", 1974, ch. 23): u* = argmin_{u ≥ 0} ‖R u‖² + (1ᵀu − 1)²
  with RᵀR = G gives α = u*/1ᵀu*, because for u = sα the inner minimum over s is
  αᵀGα / (1 + αᵀGα), increasing in αᵀGα. `scipy.optimize.nnls` (active set) solves it exactly.
* `dual_cone_weights(G, U)`: for every row u of U, v = argmin_{v ≥ u} vᵀGv, the weights of the
  projection of Jᵀu onto the dual cone {x : Jx ≥ 0} of the rows (UPGrad, Quinton & Rey 2024, Prop. 1);
  with v = u + x, x ≥ 0 it is the NNLS problem min_x ‖R x + R u‖.
* `gram_factor(G)`: R with RᵀR = G from the eigendecomposition (rounding's negative eigenvalues set to 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from scipy.optimize import nnls

from .base import AggregatorWeighting

#: The engine's task-gradient matrix is float32, so eigenvalues of G below λ_max·K·ε(float32) are
#: rounding noise: the numerical rank is counted against this tolerance.
GRAM_RELATIVE_EPS = float(np.finfo(np.float32).eps)


class GramAggregator(AggregatorWeighting):
    """An aggregator whose update is Jᵀw with w a function of G = J Jᵀ (see the module docstring).

    Subclasses implement `gram_weights(G / trace G, losses) -> w`. All-zero gradients give a zero update;
    non-finite gradients (an fp16 overflow) are passed through summed, so a grad scaler sees the inf
    and skips the step, and no state is touched.
    """

    #: The weights scale as c^(−weight_degree) when every gradient is multiplied by c > 0.
    weight_degree: ClassVar[int] = 0

    def gram_weights(self, gram: np.ndarray, losses: Sequence[float]) -> np.ndarray:
        """The K weights of the rows, from the trace-normalised Gram matrix (float64, K × K)."""
        raise NotImplementedError

    def aggregate(self, grads: torch.Tensor, losses: Sequence[float]) -> torch.Tensor:
        gram = (grads @ grads.T).double().cpu().numpy()
        trace = float(np.trace(gram))
        if not np.isfinite(gram).all():
            return grads.sum(0)
        if trace <= 0.0:
            return torch.zeros_like(grads[0])
        weights = self.gram_weights(gram / trace, losses) * trace ** (-self.weight_degree / 2)
        update = torch.as_tensor(weights, dtype=grads.dtype, device=grads.device) @ grads
        if not torch.isfinite(update).all():
            # A weight beyond float32 on a tiny row (rows many orders of magnitude apart): w_i·g_i is still
            # finite, so form the sum row by row in float64 (P-sized temporaries only).
            update = sum((row.double() * float(w)).to(grads.dtype) for w, row in zip(weights, grads) if w != 0)
            update = update if isinstance(update, torch.Tensor) else torch.zeros_like(grads[0])
        return update


def gram_factor(gram: np.ndarray) -> np.ndarray:
    """R (K × K) with RᵀR = G, from G = V Λ Vᵀ: R = Λ^½ Vᵀ."""
    eigenvalues, vectors = np.linalg.eigh(gram)
    return np.sqrt(np.clip(eigenvalues, 0.0, None))[:, None] * vectors.T


def min_norm_weights(gram: np.ndarray) -> np.ndarray:
    """argmin over the probability simplex of αᵀGα (exact, by NNLS; see the module docstring)."""
    k = len(gram)
    system = np.vstack([gram_factor(gram), np.ones((1, k))])
    target = np.zeros(k + 1)
    target[-1] = 1.0
    u, _ = nnls(system, target)
    return u / u.sum()  # 1ᵀu* = 1 / (1 + α*ᵀGα*) > 0


def dual_cone_weights(gram: np.ndarray, lower_bounds: np.ndarray) -> np.ndarray:
    """For every row u of `lower_bounds` (n × K), argmin_{v ≥ u} vᵀGv (exact, by NNLS), as rows of an n × K array."""
    factor = gram_factor(gram)
    return np.stack([u + nnls(factor, -factor @ u)[0] for u in np.atleast_2d(lower_bounds)])
