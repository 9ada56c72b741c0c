"""One training run as library functions: transformers' `run_glue.py` flow for several tasks at once.

`hf-mtl train` is `train(argv)`; `run_training(model_args, data_args, training_args)` is the same run
from argument dataclasses, and `build_datasets` the data half of it for your own scripts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
from collections.abc import Sequence
from typing import Any

import transformers
from transformers import AutoConfig, AutoTokenizer, set_seed

from .arguments import DataArguments, ModelArguments, parse_train_args
from .checkpoint import last_complete_checkpoint
from .data import cap_rows, hold_out, load_task, tokenize_splits
from .distributed import end_process_group
from .lora import is_lora, trainable_counts
from .metrics import check_metric_names, score_name
from .model_card import TRAINING_ARGS_FILE, base_model_id
from .modeling import MultiTaskModel, resolve_model_path
from .task_file import parse_task_list, read_task_file
from .tasks import TaskSpec
from .trainer import MultiTaskTrainer
from .training_args import MultiTaskTrainingArguments

logger = logging.getLogger("hf_mtl")

#: Files that make an output folder a finished run: a saved model (what `save_model` writes) ...
RUN_MODEL_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json", "training_args.bin")
#: ... or a run's results (what `hf-mtl train` writes after training and evaluation).
RUN_RESULT_FILES = ("all_results.json", "train_results.json", "eval_results.json", "trainer_state.json",
                    TRAINING_ARGS_FILE)
_CHECKPOINT_DIR = re.compile(r"^checkpoint-\d+$")


def load_tasks(tasks: Sequence[TaskSpec], data_args: DataArguments) -> tuple[list[TaskSpec], dict[str, Any]]:
    """Load, validate and cap every task's splits: (the specs with their label sets resolved from the training
    data, {task: prepared DatasetDict}). A task's own `max_train_samples` / `max_eval_samples` override the flags.
    With --validation_split_percentage the evaluation splits are held-out training rows (`hold_out`), taken from
    the rows --max_train_samples keeps."""
    resolved, prepared = [], {}
    percentage = data_args.validation_split_percentage
    if percentage:
        logger.warning("--validation_split_percentage %s: every task is evaluated on %s%% of its training rows, "
                       "held out from training, not on its dev split.", percentage, percentage)
    for spec in tasks:
        spec, splits = load_task(spec, data_args.glue_dir)
        train_cap = spec.max_train_samples or data_args.max_train_samples
        eval_cap = spec.max_eval_samples or data_args.max_eval_samples
        resolved.append(spec)
        if percentage:
            splits = hold_out(cap_rows(splits, train_cap), spec, percentage)
            train_cap = None
        prepared[spec.name] = cap_rows(splits, train_cap, eval_cap)
    return resolved, prepared


def tokenize_tasks(tasks: Sequence[TaskSpec], prepared: dict[str, Any], tokenizer: Any,
                   data_args: DataArguments) -> tuple[dict, dict]:
    """Tokenise the prepared splits of `load_tasks`: (train sets by task, evaluation sets by eval key). A task's own
    `max_seq_length` overrides the flag. A split whose data is absent is left out (`missing_eval_splits`)."""
    train, evaluation = {}, {}
    for spec in tasks:
        splits = tokenize_splits(prepared[spec.name], spec, tokenizer, spec.max_seq_length or data_args.max_seq_length)
        if "train" in splits:
            train[spec.name] = splits["train"]
        for split, key in spec.eval_keys().items():
            if split in splits:
                evaluation[key] = splits[split]
    return train, evaluation


def build_datasets(tasks: Sequence[Any], tokenizer: Any, data_args: DataArguments) -> tuple[dict, dict]:
    """Load, cap and tokenise every task: (train sets by task, evaluation sets by eval key) (`load_tasks`, then
    `tokenize_tasks`). For tasks whose label set comes from the data, call those two to get the resolved specs."""
    resolved, prepared = load_tasks(list(tasks), data_args)
    return tokenize_tasks(resolved, prepared, tokenizer, data_args)


def run_tasks(training_args: MultiTaskTrainingArguments, data_args: DataArguments) -> list[TaskSpec]:
    """The run's tasks, from --tasks (GLUE names, or a task list from a train config's `tasks:`) or --task_config."""
    if training_args.tasks and data_args.task_config:
        raise ValueError(f"--tasks {training_args.tasks[:60]} and --task_config {data_args.task_config} both name the "
                         "tasks; give one (a task file can mix GLUE tasks in: `- glue: mrpc`).")
    if data_args.task_config:
        return read_task_file(data_args.task_config)
    if not training_args.tasks:
        raise ValueError("--tasks is required, e.g. --tasks sst2,mrpc,stsb (or --task_config FILE for your own tasks).")
    return parse_task_list(training_args.tasks)


def missing_eval_splits(tasks: Sequence[Any], evaluation: dict) -> dict[str, list[str]]:
    """{task: its evaluation splits absent from `evaluation` (as returned by `build_datasets`)}, tasks with one."""
    missing = {spec.name: [split for split, key in spec.eval_keys().items() if key not in evaluation] for spec in tasks}
    return {name: splits for name, splits in missing.items() if splits}


def _eval_source(spec: Any, split: str, data_args: DataArguments) -> str:
    """Where `split` of `spec` would have come from: its file in the GLUE folder, else the split's name."""
    from .data import glue_file

    if spec.source is not None:
        return f"its {split!r} split (its task entry gives no validation_file, nor a source with that split)"
    glue_dir = data_args.glue_dir or os.environ.get("GLUE_DIR")
    path = glue_file(spec.name, split, glue_dir) if glue_dir else None
    return str(path) if path is not None else f"its {split!r} split"


def check_eval_coverage(tasks: Sequence[Any], evaluation: dict, data_args: DataArguments) -> dict[str, str]:
    """With --do_eval, every task's evaluation data must be there (a ValueError naming the missing file and
    the task otherwise), unless --eval_available_only: then the tasks that have it are evaluated, the log
    says which, and the returned {result key: value} records it for the results files ({} when all are)."""
    missing = missing_eval_splits(tasks, evaluation)
    if not missing:
        return {}
    score = f"eval_{score_name(tasks)}"
    by_name = {spec.name: spec for spec in tasks}
    described = "; ".join(f"task {name}: {' and '.join(_eval_source(by_name[name], split, data_args) for split in splits)}"
                          f" not found" for name, splits in missing.items())
    covered = [spec.name for spec in tasks if len(missing.get(spec.name, ())) < len(spec.eval_keys())]
    if not covered:
        raise ValueError(f"--do_eval: none of the tasks has evaluation data ({described}). Add the evaluation files, "
                         "or drop --do_eval.")
    if not data_args.eval_available_only:
        raise ValueError(
            f"--do_eval: {described}. Add the evaluation file(s), drop the task(s) from --tasks, or pass "
            f"--eval_available_only to evaluate {','.join(covered)} only ({score} then covers those tasks)."
        )
    not_evaluated = [f"{name}/{split}" for name, splits in missing.items() for split in splits]
    logger.warning("--eval_available_only: no evaluation data for %s (%s); evaluating %s, and %s covers "
                   "%s only.", ", ".join(not_evaluated), described, ",".join(covered), score, ",".join(covered))
    return {f"{score}_tasks": ",".join(covered), "eval_not_evaluated": ",".join(not_evaluated)}


def _previous_checkpoints(output_dir: str) -> list[str]:
    return sorted(name for name in os.listdir(output_dir)
                  if _CHECKPOINT_DIR.match(name) and os.path.isdir(os.path.join(output_dir, name)))


def finished_run_files(output_dir: str) -> list[str]:
    """The files of `output_dir` that make it a finished run (a saved model or results), [] if none."""
    return [name for name in (*RUN_MODEL_FILES, *RUN_RESULT_FILES) if os.path.isfile(os.path.join(output_dir, name))]


def output_dir_checkpoint(training_args: MultiTaskTrainingArguments) -> str | None:
    """run_glue.py's rule for `--output_dir`, checked before any data is read; returns the checkpoint to resume
    from (None: train from scratch).

    An output folder with `checkpoint-*` folders resumes from the last complete one (or from
    --resume_from_checkpoint). One that holds a finished run (`finished_run_files`) and no checkpoint is
    refused unless --overwrite_output_dir, which also turns resuming off (but for --resume_from_checkpoint);
    so is one whose checkpoints are all incomplete and that holds a finished run. Any other folder (missing, empty,
    holding unrelated files such as a log) is trained into.
    """
    out = training_args.output_dir
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--output_dir {out} is a file, not a folder; pass a folder (it is created if missing).")
    explicit = training_args.resume_from_checkpoint
    if not training_args.do_train or training_args.overwrite_output_dir or not os.path.isdir(out):
        return explicit if training_args.do_train else None
    if _previous_checkpoints(out):
        if explicit is not None:
            return explicit
        checkpoint = last_complete_checkpoint(out)
        if checkpoint is not None:
            logger.info("Checkpoint found in %s: resuming from %s", out, checkpoint)
            return checkpoint
    finished = finished_run_files(out)
    if finished:
        raise ValueError(
            f"--output_dir {out} already holds a finished run ({', '.join(finished)}) and no complete checkpoint-* folder to "
            "resume from: training would overwrite it. Pass another --output_dir, or --overwrite_output_dir to train "
            "from scratch in its place (the old results files are then deleted)."
        )
    return explicit


def clear_previous_run(training_args: MultiTaskTrainingArguments) -> None:
    """--overwrite_output_dir, when training starts: delete the old run's checkpoints and results files, so that
    a later resume cannot pick an old checkpoint and all_results.json cannot mix old and new metrics."""
    out = training_args.output_dir
    if not (training_args.overwrite_output_dir and os.path.isdir(out) and training_args.should_save):
        return
    resumed = training_args.resume_from_checkpoint
    stale = [name for name in _previous_checkpoints(out)  # but not the checkpoint this run resumes from
             if resumed is None or os.path.realpath(os.path.join(out, name)) != os.path.realpath(resumed)]
    stale += [name for name in RUN_RESULT_FILES if os.path.isfile(os.path.join(out, name))]
    if not stale:
        return
    logger.warning("--overwrite_output_dir: deleting the previous run's %s from %s.", ", ".join(stale), out)
    for name in stale:
        path = os.path.join(out, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def add_peft(model: MultiTaskModel, model_args: ModelArguments) -> None:
    """--peft lora: LoRA on the shared encoder (`MultiTaskModel.add_lora`); a saved LoRA run continues with its own
    adapter (its settings, whatever the --lora_* flags say). Logs the trainable share of the parameters."""
    if is_lora(model.encoder):
        if model_args.peft is not None:
            logger.info("The saved model carries a LoRA adapter (%s): training it further; the --lora_* flags are "
                        "ignored.", model.config.peft)
    elif model_args.peft == "lora":
        model.add_lora(model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout, model_args.lora_target_modules,
                       base_model_name_or_path=base_model_id(model.encoder.config))
    else:
        return
    trainable, total = trainable_counts(model)
    logger.info("LoRA on the encoder: %d of %d parameters trainable (%.2f%%: the adapter, the heads%s)", trainable, total,
                100 * trainable / total, " and the pooler" if (model.config.peft or {}).get("modules_to_save") else "")


def train(argv: Sequence[str]) -> dict[str, Any]:
    """`hf-mtl train ARGV`: parse the flags (and config file), set up logging, run `run_training`."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    model_args, data_args, training_args = parse_train_args(argv)
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    try:
        return run_training(model_args, data_args, training_args)
    finally:
        end_process_group()


def run_training(model_args: ModelArguments, data_args: DataArguments,
                 training_args: MultiTaskTrainingArguments) -> dict[str, Any]:
    """Fine-tune one encoder on several tasks; writes the model, `all_results.json` and `eval_results.json`.

    The `run_glue.py` flow: load and tokenise every task, build the model (or continue a saved one),
    train (resuming from the last complete checkpoint in `output_dir`), evaluate, save, push. An
    `output_dir` holding a finished run is refused unless --overwrite_output_dir (`output_dir_checkpoint`);
    with --do_eval, a task without evaluation data is refused unless --eval_available_only
    (`check_eval_coverage`): both before training.
    """
    tasks = run_tasks(training_args, data_args)
    for spec in tasks:
        check_metric_names(spec)
    checkpoint = output_dir_checkpoint(training_args)  # before any model or data is read
    set_seed(training_args.seed)

    model_path = resolve_model_path(model_args.model_name_or_path)
    config = AutoConfig.from_pretrained(model_path)
    if config.model_type == "hf_mtl":  # before any data is read: a saved model fixes its tasks and heads
        check_saved_model_tasks(model_args.model_name_or_path, config.task_specs, tasks)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tasks, prepared = load_tasks(tasks, data_args)
    if config.model_type == "hf_mtl":  # the label sets read from the data must fit the saved heads
        check_saved_model_tasks(model_args.model_name_or_path, config.task_specs, tasks)
    train_sets, eval_sets = tokenize_tasks(tasks, prepared, tokenizer, data_args)
    if training_args.do_train and len(train_sets) != len(tasks):
        missing = [t.name for t in tasks if t.name not in train_sets]
        raise ValueError(f"--do_train: no training split for {missing}; add their training data (train.tsv in --glue_dir, "
                         "or train_file in the task file) or drop them from the tasks.")
    coverage = check_eval_coverage(tasks, eval_sets, data_args) if training_args.do_eval else {}

    if config.model_type == "hf_mtl":
        model = MultiTaskModel.from_pretrained(model_path)
    else:
        model = MultiTaskModel.from_encoder(model_path, tasks, classifier_dropout=model_args.classifier_dropout,
                                            pooling=model_args.pooling)
    add_peft(model, model_args)

    trainer = MultiTaskTrainer(
        model=model,
        args=training_args,
        train_dataset=train_sets if training_args.do_train else None,
        eval_dataset=eval_sets if training_args.do_eval else None,
        processing_class=tokenizer,
        tasks=tasks,
    )
    results: dict[str, Any] = {}
    if training_args.do_train:
        clear_previous_run(training_args)
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        if trainer.interrupted_by is not None:
            name = signal.Signals(trainer.interrupted_by).name
            logger.warning("Stopped by %s at step %d of %d with a checkpoint in %s; run the same command again to "
                           "resume.", name, trainer.state.global_step, trainer.state.max_steps, training_args.output_dir)
            raise SystemExit(128 + trainer.interrupted_by)  # the shell's convention for "killed by this signal"
        trainer.save_model()
        if trainer.is_world_process_zero():
            with open(os.path.join(training_args.output_dir, TRAINING_ARGS_FILE), "w") as f:
                json.dump({**training_args.to_dict(), "world_size": training_args.world_size}, f, indent=2)
        metrics = dict(train_result.metrics)
        metrics["train_samples"] = sum(len(ds) for ds in train_sets.values())
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        results.update(metrics)
    if training_args.do_eval:
        metrics = trainer.evaluate()
        if coverage:
            covered = next(key for key in coverage if key.endswith("_tasks"))
            logger.warning("%s covers %s only; not evaluated (no data): %s.", covered.removesuffix("_tasks"),
                           coverage[covered], coverage["eval_not_evaluated"])
            metrics.update(coverage)
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)
    if training_args.do_train:
        trainer.save_state()  # after the evaluation, so trainer_state.json holds its metrics too
    if training_args.push_to_hub:
        trainer.push_to_hub()
    return results


def check_saved_model_tasks(path: str, saved: Sequence[Any], wanted: Sequence[Any]) -> None:
    """A saved hf_mtl model continues training only on its own tasks, with the same heads (kind, labels)."""
    by_name = {t.name: t for t in saved}
    described = ", ".join(f"{t.name} ({t.kind}, {t.num_labels} label{'s' if t.num_labels > 1 else ''})" for t in saved)
    if sorted(by_name) != sorted(t.name for t in wanted):
        raise ValueError(
            f"--model_name_or_path {path} is a saved hf_mtl model with tasks {described}, but --tasks is "
            f"{','.join(t.name for t in wanted)}. Pass --tasks {','.join(by_name)}, or start from its encoder."
        )
    for task in wanted:
        head = by_name[task.name]
        if not task.resolved:
            continue  # its label set is read from the data; checked again once it is
        same_names = head.label_names is None or task.label_names is None or list(head.label_names) == list(task.label_names)
        if (head.kind, head.num_labels) != (task.kind, task.num_labels) or not same_names:
            raise ValueError(
                f"--model_name_or_path {path}: task {task.name!r} of the saved model is {head.kind} with "
                f"{head.num_labels} label(s) {list(head.label_names or [])}, but the data has {task.kind} with "
                f"{task.num_labels} label(s) {list(task.label_names or [])}. Its head cannot be trained on this data; "
                "start from the encoder instead."
            )
