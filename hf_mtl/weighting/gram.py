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
* `alpha_fair_weights(G, a)`: w > 0 with (Gw)_i = w_i^(−1/a), the α-fair bargaining weights (Nash-MTL
  at a = 1, FairGrad for any a > 0). It is the unique minimiser of the strictly convex
  ½ wᵀGw + Σ_i ψ_a(w_i) (ψ_a' (w) = −w^(−1/a)); exact up to rounding whatever the scales of the rows: the
  equation is rewritten on the cosine matrix C = D⁻¹GD⁻¹ (D = diag ‖g_i‖) with w_i = β_i/‖g_i‖, which
  for a = 1 is the same equation Cβ = 1/β (Nash's solution is invariant to each row's scale), then
  solved by damped Newton to the last digit. No ridge is added unless the problem has no solution: when
  0 is (to float32 rounding) in the convex hull of the unit rows (`min_norm_weights(C)`), or a row is 0.
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
#: Newton iterations of `alpha_fair_weights` (it stops long before: quadratic convergence).
FAIR_MAX_ITERATIONS = 500


class GramAggregator(AggregatorWeighting):
    """An aggregator whose update is Jᵀw with w a function of G = J Jᵀ (see the module docstring).

    Subclasses implement `gram_weights(G / trace G, losses) -> w`. All-zero gradients give a zero update;
    non-finite gradients (an fp16 overflow) are passed through summed, so a grad scaler sees the inf
    and skips the step, and no state is touched.
    """

    #: The weights scale as c^(−weight_degree) when every gradient is multiplied by c > 0 (a class
    #: constant, or an instance attribute when a hyperparameter sets it, as FairGrad's α does).
    weight_degree: ClassVar[float] = 0

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


def live_cosines(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(which rows are nonzero, their norms, the symmetrised cosine matrix between them) of a Gram matrix:
    the scale-free form that the equal-cosine and bargaining solvers work on (zero rows get weight 0)."""
    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    live = norms > 0
    n = norms[live]
    cosine = gram[np.ix_(live, live)] / np.outer(n, n)
    return live, n, (cosine + cosine.T) / 2


def stationary_threshold(k: int) -> float:
    """A squared min-norm of the hull of K unit rows below this is 0 to the float32 rounding of G."""
    return k * GRAM_RELATIVE_EPS


def alpha_fair_weights(gram: np.ndarray, a: float) -> np.ndarray:
    """w with (G w)_i = w_i^(−1/a), w_i > 0, for the rows with a non-zero gradient (w_i = 0 for a zero row,
    which has no direction to bargain over). See the module docstring.

    With w_i = β_i/n_i, n_i = ‖g_i‖ = √G_ii, the equation reads (Cβ)_i = c_i β_i^(−1/a) with C the cosine
    matrix and c_i = n_i^(1/a − 1) (all 1 for a = 1). That is the gradient of the strictly convex
    f(β) = ½βᵀCβ + Σ_i c_i ψ(β_i), ψ(b) = −log b (a = 1) or b^(1−1/a)/(1/a − 1), so Newton's method on f
    (Hessian C + diag(c_i β_i^(−1/a−1)/a), positive definite) with a backtracking (Armijo) line search
    kept inside β > 0 converges from β⁰ = c^(a/(a+1)) (the solution for orthogonal rows), quadratically
    near the solution, until the Newton decrement reaches the rounding floor. f is bounded below iff 0 is
    not in the convex hull of the unit rows; when it is (min-norm² ≤ `stationary_threshold`), C + εI with ε that threshold is solved instead, so
    weights stay finite and every task still gets a positive share."""
    k = len(gram)
    live, n, cosine = live_cosines(gram)
    weights = np.zeros(k)
    if not live.any():
        return weights
    factor = gram_factor(cosine)  # rounding's negative eigenvalues dropped: C is positive semi-definite
    cosine = factor.T @ factor
    m = len(n)
    hull = min_norm_weights(cosine)
    if float(hull @ cosine @ hull) <= stationary_threshold(m):
        cosine = cosine + stationary_threshold(m) * np.eye(m)
    exponent = 1.0 / a
    coefficients = n ** (exponent - 1.0)

    def objective(b: np.ndarray) -> tuple[float, float]:
        """f(β), and the size of its terms (the rounding scale of a difference of two f values)."""
        barrier = -np.log(b) if a == 1.0 else b ** (1.0 - exponent) / (exponent - 1.0)
        quadratic = 0.5 * float(b @ cosine @ b)
        return quadratic + float(coefficients @ barrier), quadratic + float(np.abs(coefficients * barrier).sum())

    beta = coefficients ** (a / (a + 1.0))
    value, scale = objective(beta)
    previous = np.inf
    for _ in range(FAIR_MAX_ITERATIONS):
        barrier = coefficients * beta ** (-exponent)
        gradient = cosine @ beta - barrier
        hessian = cosine + np.diag(exponent * barrier / beta)
        step = np.linalg.solve(hessian, gradient)
        decrement = float(np.sqrt(max(gradient @ step, 0.0)))
        if decrement < 1e-15 or (decrement < 1e-8 and decrement >= previous):
            break  # converged, or at the rounding floor
        previous = decrement
        # Backtracking (Armijo) on f from the full Newton step, kept inside β > 0.
        t = 1.0
        growing = step > 0
        if growing.any():
            t = min(t, 0.99 * float(np.min(beta[growing] / step[growing])))
        while True:
            candidate = beta - t * step
            new_value, new_scale = objective(candidate)
            if new_value <= value - 1e-4 * t * decrement**2 + 8 * np.finfo(float).eps * max(scale, new_scale) or t < 1e-20:
                break
            t *= 0.5
        beta, value, scale = candidate, new_value, new_scale
    weights[live] = beta / n
    return weights
