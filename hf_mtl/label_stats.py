"""`LabelStatistics`: what the training labels of one task look like, as plain numbers.

`hf_mtl.data.label_statistics` computes them from a dataset; the weighting strategies that need them
(`init`, `prior`) read only this small record, so they depend on no data-loading code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelStatistics:
    """Statistics of one task's training labels.

    Classification: `class_counts[c]` rows with label c (length num_labels).
    Regression: `mean`, `variance` (population, E[(y-μ)²]) and `mean_square` (E[y²]).
    """

    num_rows: int
    class_counts: np.ndarray | None = None
    mean: float | None = None
    variance: float | None = None
    mean_square: float | None = None

    @property
    def class_frequencies(self) -> np.ndarray:
        assert self.class_counts is not None, "class frequencies exist for classification tasks only"
        return self.class_counts / self.class_counts.sum()
