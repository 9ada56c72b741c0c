"""`LabelStatistics`: what the training labels of one task look like, as plain numbers.

Each task kind (`hf_mtl.kinds`) computes them from a dataset; the weighting strategies that need them
(`init`, `prior`) read only this small record, so they depend on no data-loading code. Whatever the kind,
two numbers say what `init` and `prior` divide by:

* `initial_loss`: the loss of an uninformed head (all-zero outputs) on these labels;
* `prior_loss`: the loss of the best predictor that sees the labels' distribution but not the input.

For the two classic kinds they follow from the other fields when not given: classification
(`class_counts`) has initial log C and prior the label entropy; regression (`mean_square`, `variance`)
has initial E[y²] and prior Var(y).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def entropy(frequencies: np.ndarray) -> float:
    """−Σ p log p in nats, with 0·log 0 = 0."""
    p = np.asarray(frequencies, dtype=np.float64)
    return float(np.sum(p * np.log(1 / np.where(p > 0, p, 1.0))))  # p log(1/p): a certain class gives +0, not −0


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """H(p) = −p log p − (1−p) log(1−p) per entry, in nats (0 at p = 0 or 1)."""
    p = np.asarray(p, dtype=np.float64)
    return np.array([entropy(np.array([q, 1.0 - q])) for q in p.reshape(-1)]).reshape(p.shape)


@dataclass(frozen=True)
class LabelStatistics:
    """Statistics of one task's training labels.

    Classification-like kinds: `class_counts[c]` labelled units (rows, words, ...) with label c.
    Regression: `mean`, `variance` (population, E[(y-μ)²]) and `mean_square` (E[y²]), summed over the
    target's dimensions for a vector target. `initial_loss` / `prior_loss` (see the module docstring)
    default from those; `initial_source` / `prior_source` say in words where they come from.
    """

    num_rows: int
    class_counts: np.ndarray | None = None
    mean: float | None = None
    variance: float | None = None
    mean_square: float | None = None
    initial_loss: float | None = None
    prior_loss: float | None = None
    initial_source: str | None = None
    prior_source: str | None = None

    def __post_init__(self) -> None:
        if self.class_counts is not None:
            counts = np.asarray(self.class_counts, dtype=np.float64)
            self._default("initial_loss", math.log(len(counts)) if len(counts) else math.nan, "log C")
            frequencies = counts / counts.sum() if counts.sum() > 0 else counts * math.nan
            self._default("prior_loss", entropy(frequencies), "entropy of its training label frequencies")
        if self.mean_square is not None:
            self._default("initial_loss", float(self.mean_square), "E[y²] of the training labels")
        if self.variance is not None:
            self._default("prior_loss", float(self.variance), "variance of its training labels")

    def _default(self, name: str, value: float, source: str) -> None:
        """Fill `name` (and its source, unless the kind gave its own wording) when the kind left it unset."""
        if getattr(self, name) is None:
            object.__setattr__(self, name, value)
            source_field = name.replace("_loss", "_source")
            if getattr(self, source_field) is None:
                object.__setattr__(self, source_field, source)

    @property
    def class_frequencies(self) -> np.ndarray:
        assert self.class_counts is not None, "class frequencies exist for classification tasks only"
        return self.class_counts / self.class_counts.sum()
