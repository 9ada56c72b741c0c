"""`init`: divide each task loss by its loss at initialisation.

    F = Σ_i L_i / L_i(init),    dF/dL_i = 1/L_i(init)    (log h_i = −log L_i(init), log c = 0)

Su, "Chatting about Multi-Task Learning (I): In the Name of Loss" (2022, https://kexue.fm/archives/8870),
section "Initial State": the reciprocal of the initial loss makes each task's loss dimensionless.
L_i(init) is either

- theoretical (`--init_estimate_batches 0`, default): the loss of an uninformed model, which each task
  kind states in its label statistics (`LabelStatistics.initial_loss`). A freshly initialised head
  outputs ~0 logits, i.e. the uniform distribution, so C-class cross-entropy (classification, token
  tags, N choices) starts at log C; a regression head outputs ~0, so squared error starts at E‖y‖²
  of the training labels; a multi-label head's binary cross-entropy starts at log 2; or
- estimated (`--init_estimate_batches N`, N > 0): the mean loss of the first N batches, measured by the
  trainer before any update and handed to `set_initial_losses`.

`hparams()` names the mode `init_losses` ("theoretical" or "estimated").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..tasks import TaskSpec
from .base import WeightingConfig, check_number
from .ratio import ReferenceLossWeighting
from .registry import register


@register
class InitWeighting(ReferenceLossWeighting):
    """F = Σ_i L_i / L_i(init). State: the initial losses (checkpointed; once restored, a resumed run does
    not measure them again)."""

    name = "init"
    description = "each loss over its initial loss, Σ L_i / L_i(init) (theoretical log C and E[y²], or measured)"
    missing_reference_hint = (
        "With --init_estimate_batches N > 0 the trainer measures them (the mean loss of the first N "
        "batches, before any update) and calls set_initial_losses(...); check needs_initial_losses before training."
    )

    @dataclass
    class Config(WeightingConfig):
        init_estimate_batches: int = field(
            default=0,
            metadata={
                "help": "For `init`: 0 takes the theoretical initial loss (log C for C classes, E[y^2] for regression); "
                "N > 0 measures the mean loss of the first N batches before any update."
            },
        )

        def __post_init__(self) -> None:
            super().__post_init__()
            self.init_estimate_batches = int(check_number(
                "init_estimate_batches", self.init_estimate_batches, lambda v: v >= 0 and v == int(v),
                "a whole number >= 0 (0 = the theoretical initial loss, N = the mean loss of the first N batches)",
            ))

    config: Config

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mode = "estimated" if self.config.init_estimate_batches > 0 else "theoretical"
        if self.mode == "theoretical":
            self.reference_losses = self.checked_references(
                [self._theoretical(task) for task in self.tasks],
                [f"a theoretical initial loss ({self._theoretical_source(task)})" for task in self.tasks],
                "Its training labels are all 0 (E[y²] = 0); use --init_estimate_batches N (N > 0) to measure the "
                "initial losses, or another weighting.",
            )

    def _theoretical_source(self, task: TaskSpec) -> str:
        stats = self.label_stats.get(task.name)
        if stats is None and task.kind == "classification":
            return "log C"
        return getattr(stats, "initial_source", None) or "the initial loss of its label statistics"

    def _theoretical(self, task: TaskSpec) -> float:
        if task.name not in self.label_stats and task.kind == "classification":
            return math.log(task.num_labels)  # needs no data: an untrained head is uniform over C classes
        return float(self.label_stat(task, "initial_loss"))

    @property
    def needs_initial_losses(self) -> bool:
        return self.mode == "estimated" and self.reference_losses is None

    def set_initial_losses(self, losses: Sequence[float]) -> None:
        """Use `losses` (task order: the mean loss of each task's first batches) as L_i(init)."""
        if self.mode != "estimated":
            raise ValueError(
                f"weighting {self.name!r}: with --init_estimate_batches 0 it takes the theoretical initial losses; "
                "pass --init_estimate_batches N (N > 0) to use measured ones."
            )
        self.reference_losses = self.checked_references(
            losses, ["a measured initial loss"] * self.num_tasks,
            "Its loss before training is already 0 or broken; check its labels, or use --init_estimate_batches 0.",
        )

    def hparams(self) -> dict[str, Any]:
        return {"init_losses": self.mode, "initial_losses": self.reference_dict()}
