"""`prior`: divide each task loss by the loss of a model that learned only the label distribution.

    F = Σ_i L_i / L_i(prior),    dF/dL_i = 1/L_i(prior)    (log h_i = −log L_i(prior), log c = 0)

    classification: L(prior) = −Σ_c p_c log p_c   (entropy of the training label frequencies, 0·log 0 = 0)
    regression:     L(prior) = E[(y − μ)²]         (variance of the training labels, summed over dimensions)
    other kinds:    what the kind states (`LabelStatistics.prior_loss`; see `hf_mtl.kinds`): the tag
                    entropy over labelled words, the mean binary entropy of the labels, ...

Su, "Chatting about Multi-Task Learning (I): In the Name of Loss" (2022, https://kexue.fm/archives/8870),
section "Prior State": predicting the label prior (class frequencies, or the mean target) is what a
model scores knowing nothing about the input, so L(prior) measures how hard the task is to begin with.

A task with a prior loss of 0 (one class only, or constant targets) has nothing to divide by: such a
task is rejected with a ValueError; drop it or pick another strategy (`init`, `realtime`).
"""

from __future__ import annotations

from typing import Any

from ..label_stats import entropy
from ..tasks import TaskSpec
from .ratio import ReferenceLossWeighting
from .registry import register

__all__ = ["PriorWeighting", "entropy"]


@register
class PriorWeighting(ReferenceLossWeighting):
    """F = Σ_i L_i / L_i(prior), L(prior) from the training label statistics. Fixed once built: the prior
    losses are computed before training (and kept in the checkpoint)."""

    name = "prior"
    description = "each loss over the loss of the label prior, Σ L_i / L_i(prior) (label entropy or variance)"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reference_losses = self.checked_references(
            [self._prior_loss(task) for task in self.tasks],
            [f"a prior loss ({self._prior_source(task)})" for task in self.tasks],
            "Its training labels are all the same (or it has none), so the ratio L/L(prior) is undefined; "
            "drop that task or use another weighting (--weighting init or realtime).",
        )

    def _prior_loss(self, task: TaskSpec) -> float:
        return float(self.label_stat(task, "prior_loss"))

    def _prior_source(self, task: TaskSpec) -> str:
        stats = self.label_stats.get(task.name)
        return getattr(stats, "prior_source", None) or (
            "entropy of its training label frequencies" if task.kind == "classification"
            else "variance of its training labels")

    def hparams(self) -> dict[str, Any]:
        return {"prior_losses": self.reference_dict()}
