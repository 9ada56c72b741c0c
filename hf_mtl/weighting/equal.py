"""`equal`: the arithmetic mean of the task losses, the baseline every other strategy is judged against.

    F = (1/K) Σ_i L_i,    dF/dL_i = 1/K    (log h_i = 0, log c = −log K)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .base import Weighting
from .registry import register


@register
class EqualWeighting(Weighting):
    """F = (1/K) Σ_i L_i: every task counts the same, whatever the scale of its loss. Stateless."""

    one_task_steps = True

    name = "equal"
    description = "arithmetic mean of the task losses, (1/K) Σ L_i (the baseline)"

    def task_log_factor(self, i: int, loss: float) -> float:
        return 0.0

    def common_log_factor(self, losses: Sequence[float]) -> float:
        return -math.log(self.num_tasks)

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        return losses.mean()
