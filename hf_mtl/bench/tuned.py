"""The tuned weighted-sum baseline of `hf-mtl bench quality`: grid entry `static:tuned`.

Xin et al. (NeurIPS 2022, "Do Current Multi-Task Optimization Methods in Deep Learning Even Help?") and Kurin
et al. (NeurIPS 2022, "In Defense of the Unitary Scalarization for Deep Multi-Task Learning") find that a
weighted sum of the task losses, F = Σ_i w_i L_i with *tuned* weights, matches the multi-task methods. This is
that baseline, with its cost counted:

- **Search**: random search over the weights. Trial 0 is `equal`'s weights (1/K each); each further trial draws
  log10 w_i uniformly in [−1, 1] (each weight between 1/10 and 10) and rescales them to sum to 1, as `equal`'s do
  (the step size stays comparable; only the ratios are searched). The draws come from a fixed generator
  (`SEARCH_SEED`), so every sweep tries the same weights.
- **Scored on training data, never on dev**: each trial is an ordinary run with the grid's flags and
  `--validation_split_percentage P` (default 10): it trains on the other training rows and is scored by the macro
  score on the held-out ones. The search runs once, with the grid's first seed; its best weights then train every
  seed of the `static:tuned` row on all training rows (`--weighting static --task_weights ...`) and are evaluated on
  dev like every other row.
- **Cost**: every trial is a full run; the row's time is its own run plus the whole search.

Options: `static:tuned:trials=N:holdout=P` (defaults 8 and 10); other `key=value` options are train flags of every
trial and of the final runs, as for any grid entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The grid entry's marker: `static:tuned`.
TUNED = "tuned"
#: The weighting whose weights are searched.
STRATEGY = "static"
#: The generator of the random trials: the same weights in every sweep.
SEARCH_SEED = 0
#: Trials, held-out percentage of the training rows.
DEFAULT_TRIALS = 8
DEFAULT_HOLDOUT = 10.0
#: log10 of a drawn weight is uniform in this range (before the rescaling to a sum of 1).
LOG10_RANGE = (-1.0, 1.0)


@dataclass(frozen=True)
class TunedSearch:
    """The search of one `static:tuned` entry: how many trials, and what share of the training rows scores them."""

    trials: int = DEFAULT_TRIALS
    holdout: float = DEFAULT_HOLDOUT

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ValueError(f"--weightings: static:tuned:trials={self.trials}; give at least 1 trial (trial 0 is "
                             f"equal's weights), e.g. static:tuned:trials={DEFAULT_TRIALS}.")
        if not 0 < self.holdout < 100:
            raise ValueError(f"--weightings: static:tuned:holdout={self.holdout}; give the percentage of training rows "
                             f"held out to score the trials, between 0 and 100, e.g. holdout={DEFAULT_HOLDOUT:g}.")

    def candidates(self, tasks: Sequence[str]) -> list[dict[str, float]]:
        """The trials' weights by task: `equal`'s first, then random draws (see the module docstring)."""
        import numpy as np

        rng = np.random.default_rng(SEARCH_SEED)
        k = len(tasks)
        trials = [np.full(k, 1.0 / k)]
        for _ in range(self.trials - 1):
            weights = 10.0 ** rng.uniform(*LOG10_RANGE, size=k)
            trials.append(weights / weights.sum())
        return [{task: float(f"{w:.4g}") for task, w in zip(tasks, weights)} for weights in trials]


def is_tuned(entry: str) -> bool:
    """Whether a grid entry is the tuned baseline (`static:tuned...`)."""
    name, *pairs = entry.split(":")
    return name == STRATEGY and TUNED in pairs


def split_entry(entry: str) -> tuple[TunedSearch, list[str]]:
    """`static:tuned:trials=4:learning_rate=1e-4` -> (TunedSearch(trials=4), the entry's other `key=value` pairs)."""
    _, *pairs = entry.split(":")
    search: dict[str, Any] = {}
    rest = []
    for pair in pairs:
        key, _, value = pair.partition("=")
        if pair == TUNED:
            continue
        if key in ("trials", "holdout"):
            try:
                search[key] = int(value) if key == "trials" else float(value)
            except ValueError:
                raise ValueError(f"--weightings: {entry!r} has {pair!r}; {key} takes a number, e.g. "
                                 f"static:tuned:trials={DEFAULT_TRIALS}:holdout={DEFAULT_HOLDOUT:g}.") from None
        elif key == "task_weights":
            raise ValueError(f"--weightings: {entry!r} sets task_weights, which the search chooses; drop it.")
        else:
            rest.append(pair)
    return TunedSearch(**search), rest


def weights_flag(weights: Mapping[str, float]) -> str:
    """{sst2: 0.7, stsb: 0.3} -> `sst2=0.7,stsb=0.3` (`--task_weights`)."""
    return ",".join(f"{task}={weight:g}" for task, weight in weights.items())


def best_trial(trials: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The trial with the highest held-out score (the first of equals; failed trials have none)."""
    scored = [t for t in trials if t.get("score") is not None]
    if not scored:
        raise RuntimeError("static:tuned: every search trial failed (their errors are in the search table); no "
                           "weights to choose.")
    return max(scored, key=lambda t: t["score"])
