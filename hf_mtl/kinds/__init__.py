"""The registry of task kinds: name -> `TaskKind` (see `hf_mtl.kinds.base`). A new kind is one module and one line here."""

from __future__ import annotations

from .base import IGNORE_INDEX, LABEL_COLUMN, MODEL_INPUTS, TaskKind
from .classification import Classification
from .multi_label import MultiLabel
from .multiple_choice import MultipleChoice
from .regression import Regression
from .token_classification import TokenClassification

KINDS: dict[str, TaskKind] = {kind.name: kind for kind in (
    Classification(),
    Regression(),
    MultiLabel(),
    TokenClassification(),
    MultipleChoice(),
)}


def get_kind(name: str) -> TaskKind:
    """The kind called `name`; a ValueError listing the kinds otherwise."""
    if name not in KINDS:
        raise ValueError(f"kind={name!r} is not a task kind; use one of {', '.join(KINDS)}.")
    return KINDS[name]


__all__ = ["IGNORE_INDEX", "KINDS", "LABEL_COLUMN", "MODEL_INPUTS", "TaskKind", "get_kind"]
