"""`gradvac`: Gradient Vaccine (Wang, Tsvetkov, Firat & Cao 2021, "Gradient Vaccine: Investigating and
Improving Multi-task Optimization in Massively Multilingual Models", ICLR).

PCGrad with a moving target: instead of removing a conflict only when the cosine is negative, every
pair (i, j) keeps a target cosine φ̂_ij, an exponential moving average of the cosines seen so far, and
g_i is rotated toward g_j whenever their cosine falls below it. For every task i, start from
g_i^V = g_i and visit the other tasks j in a random order:

    φ_ij = cos(g_i^V, g_j)
    if φ_ij < φ̂_ij:  g_i^V ← g_i^V + ‖g_i^V‖ (φ̂_ij √(1 − φ_ij²) − φ_ij √(1 − φ̂_ij²)) / (‖g_j‖ √(1 − φ̂_ij²)) · g_j
    φ̂_ij ← (1 − β) φ̂_ij + β φ_ij          (φ̂ = 0 before the first step)

The added multiple of g_j makes cos(g_i^V, g_j) exactly φ̂_ij (the paper's Eq. 4). The update is the
sum Σ_i g_i^V, as in the paper's Algorithm 1, LibMTL and torchjd. With every φ̂ at 0 (β = 0) it is
PCGrad. Every g_i^V stays a combination of the rows, so it all runs on the Gram matrix (norms and
cosines of combinations are quadratic forms in G), like `pcgrad`.

Conventions (as LibMTL's and torchjd's `GradVac`): φ̂ is updated with the cosine measured before the
correction; one target per pair over all shared parameters (LibMTL's `group_type` 0, "whole_model";
the paper also considers one per layer, not offered here); β = 0.5 by default (flag `--gradvac_beta`,
LibMTL's and torchjd's default). No ε in the denominators: a pair involving a zero gradient (no
direction) is skipped and its target left as it was; cosines are clipped to [−1, 1], and a target of
±1 (reachable only through rounding, or β = 1) skips the correction, whose multiplier would be infinite.

Randomness and state: the visiting orders of step t come from `numpy.random.default_rng([seed, t])`,
as `pcgrad`'s (the trainer's --seed; t = steps aggregated so far): every rank draws the same orders and a
resumed run continues them. The targets φ̂ (K × K, JSON by task name) and `steps` are checkpointed.
Non-finite gradients (an fp16 overflow) are passed through summed and leave the state untouched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .base import WeightingConfig, check_number
from .gram import GramAggregator
from .registry import register
from .seeded import SeededSteps
from .uncertainty import by_task, from_task_dict


def gradvac_weights(gram: np.ndarray, targets: np.ndarray, orders: Sequence[Sequence[int]],
                    beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights w with Σ_i g_i^V = Jᵀw, and the updated targets (a new array), row i visiting `orders[i]`."""
    k = len(gram)
    targets = targets.copy()
    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    total = np.zeros(k)
    for i, order in enumerate(orders):
        current = np.zeros(k)  # g_i^V = Jᵀ current
        current[i] = 1.0
        for j in order:
            if j == i:
                continue
            inner = gram[j] @ current  # g_i^V · g_j
            norm_i = math.sqrt(max(float(current @ gram @ current), 0.0))
            if norm_i == 0.0 or norms[j] == 0.0:
                continue
            cosine = min(max(float(inner) / (norm_i * norms[j]), -1.0), 1.0)
            target = targets[i, j]
            spread = math.sqrt(max(1.0 - target * target, 0.0))
            if cosine < target and spread > 0.0:
                current[j] += norm_i * (target * math.sqrt(max(1.0 - cosine * cosine, 0.0)) - cosine * spread) / (
                    norms[j] * spread)
            targets[i, j] = (1.0 - beta) * target + beta * cosine
        total += current
    return total, targets


@register
class GradVacWeighting(SeededSteps, GramAggregator):
    """Σ_i g_i^V: each task gradient rotated toward the others up to moving-average target cosines."""

    name = "gradvac"
    description = "GradVac (Wang et al. 2021): raise pairwise cosines to their moving averages, seeded order, sum (--gradvac_beta)"

    @dataclass
    class Config(WeightingConfig):
        gradvac_beta: float = field(
            default=0.5, metadata={"help": "gradvac: moving-average rate β of the target cosines (0 = PCGrad)."}
        )

        def __post_init__(self) -> None:
            super().__post_init__()
            self.gradvac_beta = check_number("gradvac_beta", self.gradvac_beta, lambda v: 0.0 <= v <= 1.0,
                                             "in [0, 1] (default 0.5; 0 keeps every target at 0, i.e. PCGrad)")

    config: Config

    def __init__(self, *args: Any, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, seed=seed, **kwargs)
        self.beta = self.config.gradvac_beta
        self.targets = np.zeros((self.num_tasks, self.num_tasks))

    def gram_weights(self, gram: np.ndarray, losses: Sequence[float]) -> np.ndarray:
        if len(gram) != self.num_tasks:
            raise ValueError(f"gradvac: {len(gram)} task gradients for {self.num_tasks} tasks.")
        weights, self.targets = gradvac_weights(gram, self.targets, self.task_orders(self.steps, len(gram)), self.beta)
        self.steps += 1
        return weights

    def state_dict(self) -> dict[str, Any]:
        targets = {name: by_task(self, row) for name, row in zip(self.task_names, self.targets)}
        return {**super().state_dict(), "targets": targets}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        saved = state.get("targets")
        if saved is not None:
            if sorted(saved) != sorted(self.task_names):
                raise ValueError(
                    f"weighting {self.name!r}: the checkpoint holds target cosines for tasks {sorted(saved)}, but this "
                    f"run trains {self.task_names}; resume with the same --tasks."
                )
            self.targets = np.array([from_task_dict(self, saved[name], "target cosines") for name in self.task_names])

    def hparams(self) -> dict[str, Any]:
        return {"beta": self.beta, "seed": self.seed, "reduction": "sum"}
