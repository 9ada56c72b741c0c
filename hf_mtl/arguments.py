"""The argument dataclasses of a training run beside `MultiTaskTrainingArguments`, as in `run_glue.py`:
which model (`ModelArguments`) and which data (`DataArguments`), and how a config file and flags become them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from .modeling import DEFAULT_MODEL
from .training_args import MultiTaskTrainingArguments


@dataclass
class ModelArguments:
    """Which encoder to fine-tune (or which hf_mtl model to continue from)."""

    model_name_or_path: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "Encoder checkpoint (Hub id or local folder), or a saved hf_mtl model to continue from."},
    )
    classifier_dropout: float | None = field(
        default=None, metadata={"help": "Dropout before each task head (default: the encoder's hidden dropout)."}
    )


@dataclass
class DataArguments:
    """Where the data comes from and how it is cut, as in transformers' run_glue.py."""

    glue_dir: str | None = field(
        default=None,
        metadata={"help": "Local folder in the original GLUE layout (SST-2/train.tsv, ...). Default: $GLUE_DIR, else the Hub (nyu-mll/glue)."},
    )
    max_seq_length: int = field(default=128, metadata={"help": "Longer inputs are truncated (batches are padded dynamically)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training rows of each task."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N rows of each evaluation split."})


def config_to_argv(path: str) -> list[str]:
    """A YAML/JSON config file as command-line flags, so that later flags override it."""
    with open(path) as f:
        if path.endswith(".json"):
            values = json.load(f)
        else:
            import yaml

            values = yaml.safe_load(f)
    if not isinstance(values, dict):
        raise ValueError(f"config file {path}: expected a mapping of flag names to values, got {type(values).__name__}.")
    argv: list[str] = []
    for key, value in values.items():
        if isinstance(value, list):
            argv += [f"--{key}", *map(str, value)]
        elif isinstance(value, dict):
            argv += [f"--{key}", json.dumps(value)]
        elif value is not None:
            argv += [f"--{key}", str(value)]
    return argv


def parse_train_args(argv: Sequence[str]) -> tuple[ModelArguments, DataArguments, MultiTaskTrainingArguments]:
    """`hf-mtl train`'s flags (after an optional leading config file) as the three argument dataclasses."""
    from transformers import HfArgumentParser

    argv = list(argv)
    if argv and argv[0].endswith((".yaml", ".yml", ".json")):
        argv = config_to_argv(argv[0]) + argv[1:]
    parser = HfArgumentParser((ModelArguments, DataArguments, MultiTaskTrainingArguments), prog="hf-mtl train")
    return parser.parse_args_into_dataclasses(args=argv)
