"""`fairgrad`: α-fair resource allocation among the tasks (Ban & Ji 2024, "Fair Resource Allocation in
Multi-Task Learning", ICML).

The update d = Σ_i w_i g_i maximises the α-fair utility of the tasks' improvements g_iᵀd on a ball; its
weights solve (Equation 4 of the paper)

    G w = w^(−1/α)   (element-wise),   w > 0,

so that g_iᵀd = w_i^(−1/α) > 0: every task improves. α = 1 is Nash-MTL (proportional fairness,
`nash_mtl`); α → 0 approaches the plain sum, larger α favours the worst-off task more (α → ∞: max-min
fairness). Default α = 2 (flag `--fairgrad_alpha`): the value of every run script of the authors'
experiments (their code's and LibMTL's `FairGrad_alpha` default is 1.0, which is `nash_mtl` here).

Scale: multiplying every gradient by c multiplies w by c^(−2α/(α+1)) and d by c^((1−α)/(1+α)).
Conventions: as the authors' code and LibMTL, the weights multiply the raw task losses (an update that
is a weighted sum, not a mean) and nothing is clipped inside the aggregator (the authors' `max_norm`
1.0 is the trainer's `--max_grad_norm`). Solver: the authors, LibMTL and torchjd call
`scipy.optimize.least_squares` on Gw − w^(−1/α) from w = 1/K (tolerances 1e-8 on the residual of
each equation, whose terms range over (norm ratio)²); here `gram.alpha_fair_weights`: Newton on the
strictly convex problem whose optimality condition this is, rewritten on the cosine matrix of the
gradients so that it is exact at any ratio of gradient norms (see `nash_mtl`). Zero gradients get
weight 0; a ridge is added only at a Pareto-stationary point, where no solution exists. α is limited to
[0.1, 10]: beyond, the weights of rows 10⁴× apart in norm span more than float64 resolves (w ∝ ‖g‖^(−2α/(α+1))
and the equation's terms scale with its powers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .base import WeightingConfig, check_number
from .gram import GramAggregator, alpha_fair_weights
from .registry import register


@register
class FairGradWeighting(GramAggregator):
    """α-fair weights w > 0 with G w = w^(−1/α) (α = 1: Nash-MTL)."""

    name = "fairgrad"
    description = "FairGrad (Ban & Ji 2024): α-fair weights solving G w = w^(−1/α), exact Newton (--fairgrad_alpha)"

    @dataclass
    class Config(WeightingConfig):
        fairgrad_alpha: float = field(
            default=2.0,
            metadata={"help": "fairgrad: fairness α > 0 (1 = Nash-MTL's proportional fairness; larger favours the "
                      "worst-off task)."},
        )

        def __post_init__(self) -> None:
            super().__post_init__()
            self.fairgrad_alpha = check_number("fairgrad_alpha", self.fairgrad_alpha, lambda v: 0.1 <= v <= 10,
                                               "a number in [0.1, 10] (default 2; 1 = Nash-MTL)")

    config: Config

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.alpha = self.config.fairgrad_alpha
        self.weight_degree = 2.0 * self.alpha / (self.alpha + 1.0)

    def gram_weights(self, gram: np.ndarray, losses: Sequence[float]) -> np.ndarray:
        return alpha_fair_weights(gram, self.alpha)

    def hparams(self) -> dict[str, Any]:
        return {"alpha": self.alpha}
