"""Shared factors of the strategies that divide each task loss by a loss of its own kind.

Su Jianlin, "Chatting about Multi-Task Learning (I): In the Name of Loss" (2022,
https://kexue.fm/archives/8870): task losses have different units and scales, so summing them is
meaningless; dividing L_i by a reference loss of the same task makes each term dimensionless.
The reference is either fixed before training (`ReferenceLossWeighting`: the initial loss, the loss
of the label prior) or the current loss itself (`InverseLossWeighting`: real-time / geometric mean).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from ..tasks import TaskSpec
from .base import Weighting


class ReferenceLossWeighting(Weighting):
    """F = Σ_i L_i / R_i with a positive reference loss R_i per task, fixed during training.

    dF/dL_i = 1/R_i: log h_i = −log R_i and c = 1. Scaling task i's loss and its reference by the same
    c > 0 leaves the update unchanged. Subclasses fill `reference_losses` (task order); it is part of
    the checkpointed state so that a resumed run keeps the objective it started with.
    """

    one_task_steps = True

    log_based = True
    #: Appended to the error raised when the references are used before they are set.
    missing_reference_hint: ClassVar[str] = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reference_losses: np.ndarray | None = None

    def label_stat(self, task: TaskSpec, field: str) -> float | np.ndarray:
        """`field` of `task`'s training-label statistics, or an error saying how to provide them."""
        stats = self.label_stats.get(task.name)
        value = None if stats is None else getattr(stats, field)
        if value is None:
            raise ValueError(
                f"weighting {self.name!r}: task {task.name!r} ({task.kind}) needs the {field} of its training "
                "labels, but no label statistics with it were given. Pass label_stats (hf_mtl.label_stats.LabelStatistics "
                "of the training split, by task name) to build_weighting."
            )
        return value

    def checked_references(self, values: Sequence[float], what: Sequence[str], fix: str) -> np.ndarray:
        """`values` as float64 after checking each is positive and finite (`what[i]` names value i)."""
        refs = np.asarray(values, dtype=np.float64)
        if refs.shape != (self.num_tasks,):
            raise ValueError(
                f"weighting {self.name!r}: got {refs.size} reference losses for {self.num_tasks} tasks "
                f"{self.task_names}; give one per task, in task order."
            )
        for name, label, value in zip(self.task_names, what, refs):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(
                    f"weighting {self.name!r}: task {name!r} has {label} {value:.6g}, but L_i is divided by it, so it "
                    f"must be positive and finite. {fix}"
                )
        return refs

    def references(self) -> np.ndarray:
        if self.reference_losses is None:
            raise RuntimeError(
                f"weighting {self.name!r}: the reference losses are not set yet. {self.missing_reference_hint}"
            )
        return self.reference_losses

    def reference_dict(self) -> dict[str, float] | None:
        """The references by task name (JSON-friendly), or None while unset."""
        if self.reference_losses is None:
            return None
        return {name: float(v) for name, v in zip(self.task_names, self.reference_losses)}

    def task_log_factor(self, i: int, loss: float) -> float:
        return -math.log(self.references()[i])

    def objective(self, losses: torch.Tensor) -> torch.Tensor:
        return (losses / losses.new_tensor(self.references())).sum()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "reference_losses": self.reference_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        saved = state.get("reference_losses")
        if saved is None:
            return
        if sorted(saved) != sorted(self.task_names):
            raise ValueError(
                f"weighting {self.name!r}: the checkpoint holds reference losses for tasks {sorted(saved)}, but this "
                f"run trains {self.task_names}; resume with the same --tasks."
            )
        self.reference_losses = self.checked_references(
            [saved[name] for name in self.task_names], ["a saved reference loss"] * self.num_tasks,
            "The checkpoint's weighting state is corrupt.",
        )


class InverseLossWeighting(Weighting):
    """Strategies whose gradient is Σ_i ∇L_i / L_i: dF/dL_i = 1/L_i, so log h_i = −log L_i and c = 1.

    Scaling task i's loss by any c > 0 leaves its contribution ∇L_i / L_i unchanged. Subclasses differ
    only in the objective whose gradient this is.
    """

    one_task_steps = True

    log_based = True

    def task_log_factor(self, i: int, loss: float) -> float:
        return -math.log(loss)
