"""`mgda`: the multiple-gradient descent direction (Désidéri 2012; Sener & Koltun 2018, "Multi-Task
Learning as Multi-Objective Optimization", NeurIPS).

The update is the min-norm point of the convex hull of the task gradients,

    d = Σ_i α_i g_i,   α = argmin_{α ≥ 0, Σ α_i = 1} ‖Σ_i α_i ĝ_i‖²  (= αᵀĜα on the Gram matrix),

with ĝ_i = g_i / n_i the gradients normalised before the min-norm problem (`--mgda_normalization`,
the options of the MGDA-UB code, `gradient_normalizers`):

    none      n_i = 1                  (default; the paper's MGDA, also LibMTL's default `mgda_gn`)
    l2        n_i = ‖g_i‖
    loss      n_i = L_i
    loss+l2   n_i = L_i ‖g_i‖          (the code's name `loss+` is accepted as an alias)

For `none`, g_iᵀd ≥ ‖d‖² ≥ 0 for every task (no task's loss increases to first order), and d = 0 at a
Pareto-stationary point. Sener & Koltun's MGDA-UB applies it to the gradients with respect to the
shared representation as a cheap upper bound; here it runs on the exact gradients of the shared
parameters (the engine's K × P matrix).

Convention for the normalisations: as the authors' code (`train_multi_task.py`: the solution becomes
the loss scales, `scale[t] = sol[i]`, and the raw losses are back-propagated), the weights α found on
the normalised gradients multiply the raw gradients: d = Σ_i α_i g_i. LibMTL instead combines the
normalised gradients, d = Σ_i α_i ĝ_i (our `geometric+mgda` is that for `loss`: it runs MGDA on
∇log L_i = g_i / L_i). Only `none` keeps the no-conflict guarantee above; with l2, d is non-conflicting
for the unit gradients' problem but its length follows the raw gradients. The loss normalisations need
positive losses: they are clamped at `loss_epsilon` (counted) and a negative one is an error. A zero
gradient stays 0 under `l2` (it has no direction; 0 is then in the hull and d = 0).

Solver: exact for every K, on the K × K Gram matrix only: the simplex QP is rewritten as a
non-negative least-squares problem and solved by `scipy.optimize.nnls` (`gram.min_norm_weights`);
for K = 2 this gives the paper's closed form α_1 = clip((ĝ_2 − ĝ_1)·ĝ_2 / ‖ĝ_1 − ĝ_2‖², 0, 1). The
paper's Frank-Wolfe iteration would only approximate the same point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .base import WeightingConfig
from .gram import GramAggregator, min_norm_weights
from .registry import register

#: The normalisations, and the spellings accepted for them (the MGDA-UB code's `loss+`).
NORMALIZATIONS = ("none", "l2", "loss", "loss+l2")
ALIASES = {"loss+": "loss+l2"}


def normalizers(gram: np.ndarray, losses: Sequence[float], normalization: str) -> np.ndarray:
    """n_i of every task (see the module docstring); rows with n_i = 0 stay 0."""
    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    loss = np.asarray(losses, dtype=np.float64)
    return {"none": np.ones(len(gram)), "l2": norms, "loss": loss, "loss+l2": loss * norms}[normalization]


def normalized_min_norm_weights(gram: np.ndarray, losses: Sequence[float], normalization: str) -> np.ndarray:
    """α on the simplex for the normalised rows ĝ_i = g_i / n_i (to be applied to the raw rows)."""
    n = normalizers(gram, losses, normalization)
    inverse = np.divide(1.0, n, out=np.zeros_like(n), where=n > 0)
    return min_norm_weights(gram * np.outer(inverse, inverse))


@register
class MGDAWeighting(GramAggregator):
    """The min-norm element of the convex hull of the (normalised) task gradients, weights on the simplex."""

    name = "mgda"
    description = ("MGDA (Sener & Koltun 2018): min-norm point of the convex hull of the task gradients (exact NNLS; "
                   "--mgda_normalization)")

    @dataclass
    class Config(WeightingConfig):
        mgda_normalization: str = field(
            default="none",
            metadata={"help": "mgda: normalise each task gradient before the min-norm problem: `none`, `l2` (by its "
                      "norm), `loss` (by its loss), `loss+l2` (by both; `loss+` is the same, the MGDA-UB code's "
                      "name). The weights then multiply the raw gradients, as in the authors' code.",
                      "choices": [*NORMALIZATIONS, *ALIASES]},
        )

        def __post_init__(self) -> None:
            super().__post_init__()
            self.mgda_normalization = ALIASES.get(self.mgda_normalization, self.mgda_normalization)

    config: Config

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.normalization = self.config.mgda_normalization
        # Dividing by a loss needs it positive: clamp at loss_epsilon, refuse a negative one (check_loss).
        self.log_based = "loss" in self.normalization

    def gram_weights(self, gram: np.ndarray, losses: Sequence[float]) -> np.ndarray:
        if self.normalization == "none":
            return min_norm_weights(gram)
        if self.log_based:  # composed as A+mgda the losses were checked by A, which may not be log-based
            for i, loss in enumerate(losses):
                if loss < 0:
                    raise ValueError(f"mgda: task {self.task_names[i]!r} has a negative loss {loss:.6g}; "
                                     f"--mgda_normalization {self.normalization} divides by the loss and needs it > 0.")
            losses = [max(float(loss), self.loss_epsilon) for loss in losses]
        return normalized_min_norm_weights(gram, losses, self.normalization)

    def hparams(self) -> dict[str, Any]:
        return {"normalization": self.normalization}
