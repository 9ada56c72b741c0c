"""`rlw`: Random Loss Weighting, fresh random weights every optimizer step (Lin et al. 2022).

    F = Σ_i λ_i L_i,    λ = softmax(z),    z ~ N(0, I) drawn once per optimizer step
    dF/dL_i = λ_i    (log h_i = z_i − log Σ_j e^(z_j), log c = 0)

Lin, Ye, Xu, Shi & Zhang, "Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task
Learning", TMLR 2022 (arXiv:2111.10603). The weights sum to 1, as in the paper (on average 1/K each,
like `equal`).

The draws come from a numpy PCG64 generator seeded with `seed` (the trainer's --seed, which
`build_weighting` passes); its state is checkpointed (JSON: plain integers), so a resumed run continues
the same stream, and every rank draws the same weights (same seed, same number of steps). The k-th
draw of a step goes to the k-th task in alphabetical order, so the weights of a task do not depend on
the order of `--tasks`.

When a step's weights are drawn: `observe` only marks the step done; the next step's weights are drawn
at its first `task_log_factor` (the engine asks for it right after the first task's forward). So all
factors of a step, the common factor and `objective` (which never draws) use the same λ, and the weights
a step reported stay those of `objective` until the next step begins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .base import Weighting, check_seed
from .registry import register
from .uncertainty import by_task, from_task_dict


@register
class RandomWeighting(Weighting):
    """F = Σ_i softmax(z)_i L_i, z ~ N(0, I) per optimizer step. State: the generator, the step counts, z."""

    name = "rlw"
    description = "random weights softmax(z), z ~ N(0, I) drawn every step (Lin et al. 2022; seeded by --seed)"
    randomised = True

    def __init__(self, *args: Any, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seed = check_seed(self.name, seed)
        self.generator = np.random.default_rng(self.seed)
        # Task i takes the draw at its name's rank in alphabetical order.
        self.draw_index = np.argsort(np.argsort(self.task_names, kind="stable"), kind="stable")
        self.steps = 0  # optimizer steps observed
        self.drawn_for = 0  # the step whose draw `z` holds
        self.z = self.generator.standard_normal(self.num_tasks)[self.draw_index]

    def step_log_weights(self) -> np.ndarray:
        """log λ of the current step, drawing λ first if this step has none yet."""
        if self.drawn_for != self.steps:
            self.z = self.generator.standard_normal(self.num_tasks)[self.draw_index]
            self.drawn_for = self.steps
        return self.z - np.logaddexp.reduce(self.z)

    def task_log_factor(self, i: int, loss: float) -> float:
        return float(self.step_log_weights()[i])

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        return (losses * torch.softmax(losses.new_tensor(self.z), dim=0)).sum()

    def observe(self, losses: Sequence[float], probe_norms: Sequence[float] | None = None) -> None:
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "generator": self.generator.bit_generator.state,
            "steps": self.steps,
            "drawn_for": self.drawn_for,
            "z": by_task(self, self.z),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if "generator" not in state:
            return
        self.generator.bit_generator.state = dict(state["generator"])
        self.steps, self.drawn_for = int(state["steps"]), int(state["drawn_for"])
        self.z = np.array(from_task_dict(self, state["z"], "random draws"))

    def hparams(self) -> dict[str, Any]:
        return {"seed": self.seed}
