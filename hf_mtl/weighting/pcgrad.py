"""`pcgrad`: gradient surgery (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning", NeurIPS).

For every task i, start from g_i^PC = g_i and visit the other tasks j in a random order; whenever
g_i^PC conflicts with g_j (g_i^PC · g_j < 0), remove the conflicting component:

    g_i^PC ← g_i^PC − (g_i^PC · g_j / ‖g_j‖²) g_j          (projections use the original g_j)

The update is the sum Σ_i g_i^PC, as in the paper's Algorithm 1 and torchjd's `PCGrad` (some
reimplementations average instead: a factor 1/K). Every g_i^PC stays a combination of the rows, so the
procedure runs on the Gram matrix alone (`pcgrad_weights`): no K × P copy. Each row draws its own
order of the other tasks, as torchjd does.

Randomness: the orders of step t come from `numpy.random.default_rng([seed, t])`, with `seed` the
trainer's --seed (passed by `build_weighting`; default 0) and t the number of steps aggregated so far (state `steps`, checkpointed):
every rank draws the same orders, and a resumed run continues the same sequence. Solver: none (a
closed-form sequence of projections). A task with a zero gradient is never projected on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .gram import GramAggregator
from .registry import register
from .seeded import SeededSteps


def pcgrad_weights(gram: np.ndarray, orders: Sequence[Sequence[int]]) -> np.ndarray:
    """Weights w with Σ_i g_i^PC = Jᵀw, row i visiting the tasks in `orders[i]` (i itself is skipped)."""
    k = len(gram)
    total = np.zeros(k)
    for i, order in enumerate(orders):
        current = np.zeros(k)  # g_i^PC = Jᵀ current
        current[i] = 1.0
        for j in order:
            if j == i or gram[j, j] <= 0.0:
                continue
            dot = gram[j] @ current
            if dot < 0.0:
                current[j] -= dot / gram[j, j]
        total += current
    return total


@register
class PCGradWeighting(SeededSteps, GramAggregator):
    """Σ_i g_i^PC: each task gradient with its conflicting components along the others projected out."""

    name = "pcgrad"
    description = "PCGrad (Yu et al. 2020): project out conflicting components pairwise in a seeded random order, sum"

    def gram_weights(self, gram: np.ndarray, losses: Sequence[float]) -> np.ndarray:
        orders = self.task_orders(self.steps, len(gram))
        self.steps += 1
        return pcgrad_weights(gram, orders)

    def hparams(self) -> dict[str, Any]:
        return {"seed": self.seed, "reduction": "sum"}
