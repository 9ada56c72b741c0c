"""`SeededSteps`: the random draws of a randomised aggregator as a pure function of (seed, step).

PCGrad's and GradVac's task orders and GradDrop's uniform draws depend only on the strategy's seed and the
number of optimizer steps it has taken, so they are identical on every rank and after a resume. The step
count is the strategy's state (`steps` in its checkpointed `state_dict`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .base import check_seed


class SeededSteps:
    """Mixin for a randomised `Weighting`: `seed`, the `steps` counter (checkpointed) and the per-step task orders."""

    randomised = True

    def __init__(self, *args: Any, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seed = check_seed(self.name, seed)
        self.steps = 0

    def task_orders(self, step: int, num_tasks: int) -> list[np.ndarray]:
        """The K visiting orders used at `step` (identical on every rank and after a resume)."""
        rng = np.random.default_rng([self.seed, step])
        return [rng.permutation(num_tasks) for _ in range(num_tasks)]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "steps": self.steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.steps = int(state.get("steps", 0))
