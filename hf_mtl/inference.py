"""Evaluation and prediction with a saved multi-task model (a run folder or a Hub id).

* `evaluate_run(RUN)` (`hf-mtl evaluate`) evaluates it on its tasks' dev sets through
  `MultiTaskTrainer.evaluate`, with the same `eval_*` keys as evaluation during training
  (`eval_glue_score` when every task is a GLUE task, else `eval_score`). A GLUE task reads --glue_dir /
  $GLUE_DIR / the Hub; a task declared in a task file reloads its evaluation split from the source
  recorded in the run's config.json (`TaskSpec.source`; relative paths are read from the current directory).
* `predict_file(RUN, task, INPUT, OUTPUT)` (`hf-mtl predict`) predicts one task for every row of a file read
  by `read_task_inputs`: a TSV with a header (through `hf_mtl.data.read_tsv`, as the GLUE files are read), or a
  `.jsonl` / `.json` / `.csv` / `.parquet` file (datasets' loaders), with the task's own column names. It
  writes `index<TAB>prediction` (TSV), or one JSON object per row for an `.jsonl` output. The predictions are
  the task kind's (`TaskKind.predictions`): a label name, a number or vector, a label set, one tag per word,
  the chosen answer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import LABEL_COLUMN, glue_column_names, read_tsv, tokenize_splits
from .hub import load_run, select_tasks, task_spec
from .kinds import IGNORE_INDEX, get_kind
from .kinds.base import arrow_column, cast_text, is_text
from .modeling import MultiTaskModel
from .tasks import TaskSpec

logger = logging.getLogger(__name__)

#: Input file extensions read with datasets' loaders (any other extension is read as TSV).
INPUT_FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    ".jsonl": ("json", {}),
    ".json": ("json", {}),
    ".csv": ("csv", {}),
    ".parquet": ("parquet", {}),
}
#: The output extension written as JSON Lines (any other is written as TSV).
JSONL_OUTPUT = ".jsonl"
#: In a TSV output, a word that has no tag (cut off by --max_seq_length).
NO_TAG = "_"
#: The default --max_seq_length of `predict_file` when the task has none of its own.
DEFAULT_MAX_SEQ_LENGTH = 128


def _inference_trainer(model: MultiTaskModel, tokenizer: Any, tasks: Sequence[TaskSpec], output_dir: str | os.PathLike[str],
                       batch_size: int, eval_dataset: Mapping[str, Any] | None = None) -> Any:
    """A `MultiTaskTrainer` that only evaluates or predicts `model` (no training arguments beyond the batch size)."""
    from .trainer import MultiTaskTrainer, MultiTaskTrainingArguments

    args = MultiTaskTrainingArguments(output_dir=str(output_dir), per_device_eval_batch_size=batch_size,
                                      report_to="none", disable_tqdm=True,
                                      dataloader_pin_memory=torch.cuda.is_available())
    weighting = model.config.weighting
    trainer = MultiTaskTrainer(model=model, args=args, eval_dataset=eval_dataset, processing_class=tokenizer, tasks=tasks)
    model.config.weighting = weighting  # the trainer records its own (untrained) weighting; keep the model's
    return trainer


# ---- evaluate ---------------------------------------------------------------------------------------


def evaluate_run(
    run: str | os.PathLike[str],
    tasks: str | Sequence[str] | None = None,
    data_args: Any = None,
    output_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    best: bool = False,
) -> dict[str, float]:
    """Evaluate a saved multi-task model (run folder or Hub id) on its tasks' evaluation splits.

    Returns and writes (`output_dir/eval_results.json`, default `RUN/evaluate` or `./evaluate-<name>`)
    the same keys as evaluation during training: `eval_<task>_<metric>`, `eval_<task>_loss`, and the macro
    score `eval_glue_score` (every task a GLUE task) or `eval_score`. `data_args` is a
    `hf_mtl.arguments.DataArguments` (glue_dir, max_seq_length, max_eval_samples; a task's own values from its
    task file win, as in training). A task from a task file reads its evaluation split from the source saved
    with the model (only that split's file, for a files source), relative paths from the current directory.

    With `best=True` (`--best`; default output `RUN/evaluate-best`) each task is evaluated with the checkpoint
    of its own best evaluation during training (`hf_mtl.task_best`), and `eval_<task>_best_step` says which
    step; the macro score averages those. The steps were chosen on these same dev sets, so the numbers are
    optimistic (a selection on the test data, in effect), not an estimate for new data.
    """
    if output_dir is None:
        name = "evaluate-best" if best else "evaluate"
        output_dir = Path(run) / name if Path(run).is_dir() else Path(f"{name}-{str(run).rstrip('/').split('/')[-1]}")
    for folder in (Path(output_dir), *Path(output_dir).parents):
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"--output_dir {output_dir}: {folder} is a file, not a folder; eval_results.json goes into "
                             "a folder (missing folders are created). Pass another --output_dir.")
    if not best:
        model, tokenizer = load_run(run)
        metrics, trainer = _evaluate_model(model, tokenizer, select_tasks(model.config, tasks), data_args, output_dir,
                                           batch_size)
    else:
        metrics, trainer = _evaluate_best(run, tasks, data_args, output_dir, batch_size)
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    return metrics


def _evaluate_best(run: str | os.PathLike[str], tasks: str | Sequence[str] | None, data_args: Any,
                   output_dir: str | os.PathLike[str], batch_size: int) -> tuple[dict[str, float], Any]:
    """Each task evaluated with the checkpoint of its best evaluation during training (a checkpoint shared by
    several tasks is loaded once); the macro score over those."""
    from .metrics import glue_score, score_name
    from .task_best import best_checkpoint

    config = _run_config(run)
    specs = select_tasks(config, tasks)
    by_checkpoint: dict[Path, list[tuple[TaskSpec, dict[str, Any]]]] = {}
    for spec in specs:  # every task's checkpoint is checked before any is evaluated
        folder, record = best_checkpoint(run, spec.name)
        by_checkpoint.setdefault(folder, []).append((spec, record))
    logger.warning("evaluate --best: each task is evaluated at its own best step, chosen on this same dev set, so these "
                   "numbers are optimistic; they are not an estimate of the model's quality on new data.")
    metrics: dict[str, float] = {}
    scores: dict[str, float] = {}
    trainer = None
    for folder, chosen in by_checkpoint.items():
        model, tokenizer = load_run(folder)
        for spec, record in chosen:  # one task at a time: its score is the macro score of a one-task evaluation
            found, trainer = _evaluate_model(model, tokenizer, [spec], data_args, output_dir, batch_size)
            scores[spec.name] = found.pop(f"eval_{score_name([spec])}")
            metrics.update(found)
            metrics[f"eval_{spec.name}_best_step"] = record["step"]
    metrics[f"eval_{score_name(specs)}"] = glue_score(scores)
    return metrics, trainer


def _run_config(run: str | os.PathLike[str]) -> Any:
    """The `MultiTaskConfig` of a run folder (without loading its weights)."""
    from transformers import AutoConfig

    from .hub import run_location

    return AutoConfig.from_pretrained(run_location(run))


def _evaluate_model(model: MultiTaskModel, tokenizer: Any, specs: Sequence[TaskSpec], data_args: Any,
                    output_dir: str | os.PathLike[str], batch_size: int) -> tuple[dict[str, float], Any]:
    """`MultiTaskTrainer.evaluate` of `model` on the evaluation splits of `specs`; the metrics and the trainer."""
    from .arguments import DataArguments
    from .pipeline import load_tasks, tokenize_tasks

    # Training sets are not used: one training row is enough (GLUE folders are read whole, then capped); the
    # evaluation splits are the dev splits, never held-out training rows.
    data_args = dataclasses.replace(data_args or DataArguments(), max_train_samples=1, validation_split_percentage=None)
    try:
        loaded, prepared = load_tasks([_evaluation_source(spec) for spec in specs], data_args)
    except FileNotFoundError as error:
        if not any(spec.source for spec in specs):
            raise
        raise FileNotFoundError(
            f"{error} (hf-mtl evaluate reads a task-file task's evaluation data from the source recorded in the run's "
            f"config.json at training time; relative paths are read from the current directory, {Path.cwd()}. Run it "
            "from the folder the training ran in, or put the data back at that path.)"
        ) from None
    _, eval_sets = tokenize_tasks(loaded, prepared, tokenizer, data_args)
    if not eval_sets:
        raise ValueError(f"evaluate: no evaluation split found for tasks {[s.name for s in specs]} in the data given "
                         "(GLUE tasks: --glue_dir / $GLUE_DIR, else the Hub; task-file tasks: the validation data "
                         "recorded in the run's config.json).")
    trainer = _inference_trainer(model, tokenizer, specs, output_dir, batch_size, eval_sets)
    metrics = trainer.evaluate()
    metrics.pop("epoch", None)  # the Trainer's log adds its epoch counter (0: nothing was trained here)
    return metrics, trainer


def _evaluation_source(spec: TaskSpec) -> TaskSpec:
    """`spec` reading only its evaluation files when its source is a set of files that has them: evaluating
    needs neither the training file (which may be large, or absent where the model is evaluated) nor a test file."""
    source = spec.source
    if not source or source.get("type") != "files":
        return spec
    wanted = {f"{split}_file" for split in spec.eval_splits}
    if not any(source.get(key) for key in wanted):
        return spec
    kept = {key: value for key, value in source.items() if not key.endswith("_file") or key in wanted}
    return dataclasses.replace(spec, source=kept)


# ---- predict: reading the input ---------------------------------------------------------------------


def read_task_inputs(spec: TaskSpec, path: str | os.PathLike[str],
                     cache_dir: str | os.PathLike[str] | None = None) -> tuple[Any, list[Any]]:
    """The rows of an input file for `spec`, as a prepared dataset (labels are placeholders), and each row's index.

    * TSV (any extension but those below), with a header line, read as the GLUE files are (quoting off): text
      columns are found under the task's names (`sentence`, `sentence1`/`sentence2`, ...) or the original GLUE
      header names (`#1 String`, ...). For a classification or one-output regression task a label column, when
      present, is validated as before; other labels are not read. A token-classification task's words column
      holds the words separated by spaces.
    * `.jsonl` / `.json` / `.csv` / `.parquet`, read with datasets' loaders: the task's columns under its own
      names (the text column(s); the words column, a list per row; the context and the choices, a list column or
      one column per choice). Labels are not read.

    An `index` column gives the row indices; otherwise rows count from 0. Text is validated by the task's kind,
    errors naming the file and line (or row).
    """
    path = Path(path)
    fmt = INPUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        return _read_tsv_inputs(spec, path)
    if cache_dir is not None:
        return _read_loader_inputs(spec, path, fmt, cache_dir)
    with tempfile.TemporaryDirectory() as scratch:
        return _read_loader_inputs(spec, path, fmt, scratch)


def _column_hint(spec: TaskSpec, tsv: bool) -> str:
    """What the input must hold for `spec`, for a missing column."""
    level = get_kind(spec.kind).level
    if level == "token":
        words = spec.text_columns[0]
        if tsv:
            return f"Name the words column {words!r} in the first line (tab-separated); it holds the words separated by spaces."
        return (f"Give each row its words as a list under {words!r}, e.g. "
                f"{{{json.dumps(words)}: [\"Tim\", \"Cook\", \"visited\", \"London\"]}}.")
    if level == "choice":
        context, choices = spec.text_columns[0], spec.text_columns[1:]
        if len(choices) == 1:
            return f"Give each row its context under {context!r} and its choices as a list under {choices[0]!r}."
        return f"Give each row its context under {context!r} and one choice per column {list(choices)}."
    if tsv:
        return f"Name the text column(s) {list(spec.text_columns)} in the first line (tab-separated)."
    return f"Give the text column(s) {list(spec.text_columns)}."


def _read_tsv_inputs(spec: TaskSpec, path: Path) -> tuple[Any, list[Any]]:
    import datasets

    table = read_tsv(path)
    if not table.rows:
        raise ValueError(f"--input {path}: expected a header line and at least one row, found "
                         f"{len(table.rows) + bool(table.header)} line(s).")
    header = table.header
    glue_names = glue_column_names(spec.name)
    positions: dict[str, int] = {}
    for column in (*spec.text_columns, LABEL_COLUMN):
        for name in (column, glue_names.get(column)):
            if name in header:
                positions[column] = header.index(name)
                break
    missing = [c for c in spec.text_columns if c not in positions]
    if missing:
        raise ValueError(
            f"--input {path}: no column {missing[0]!r} for task {spec.name!r}; the header has {header}. "
            + _column_hint(spec, tsv=True)
        )
    ragged = table.ragged(len(header))
    if ragged is not None:
        raise ValueError(f"--input {path}, line {ragged[0]}: {len(ragged[1])} tab-separated fields, the header has "
                         f"{len(header)}. Fewer means a missing field, more a tab inside a text; fix the line.")
    index: list[Any] = ([row[header.index("index")] for row in table.rows] if "index" in header
                        else list(range(len(table.rows))))
    kind = get_kind(spec.kind)
    if LABEL_COLUMN in positions and kind.level == "sequence" and (
            spec.kind == "classification" or (spec.kind == "regression" and int(spec.num_labels or 1) == 1)):
        # A GLUE-style file with its labels (a dev file): they are validated, as the GLUE reader does.
        return table.to_split(spec, positions, default_label="0"), index
    if kind.level == "choice" and len(spec.text_columns) == 2:
        raise ValueError(
            f"--input {path}: task {spec.name!r} reads its choices as a list (column {spec.text_columns[1]!r}), which "
            "a TSV file cannot hold. Give a .jsonl file instead, one row per line: "
            f"{{{json.dumps(spec.text_columns[0])}: \"...\", {json.dumps(spec.text_columns[1])}: [\"...\", \"...\"]}}."
        )
    columns = {column: [row[positions[column]] for row in table.rows] for column in spec.text_columns}
    raw = datasets.Dataset.from_dict(columns, features=datasets.Features(
        dict.fromkeys(columns, datasets.Value("string"))))
    lines = table.lines
    return _prepare_inputs(spec, raw, lambda row: f"{path}, line {lines[row]}"), index


def _read_loader_inputs(spec: TaskSpec, path: Path, fmt: tuple[str, dict[str, Any]],
                        cache_dir: str | os.PathLike[str]) -> tuple[Any, list[Any]]:
    import datasets

    builder, options = fmt
    if path.stat().st_size == 0:
        raise ValueError(f"--input {path} is empty. Give a file with one row per input.")
    try:
        raw = datasets.load_dataset(builder, data_files={"input": str(path)}, split="input", cache_dir=str(cache_dir),
                                    keep_in_memory=True, **options)
    except Exception as error:  # noqa: BLE001 - the builders raise many kinds
        cause = error.__cause__ or error
        raise ValueError(f"--input {path} cannot be read as {path.suffix.lstrip('.')}: {type(cause).__name__}: "
                         f"{str(cause)[:300]}. Fix the file, or give another format (.tsv, .jsonl, .json, .csv, "
                         ".parquet).") from None
    if len(raw) == 0:
        raise ValueError(f"--input {path} has no rows. Give a file with one row per input.")
    glue_names = glue_column_names(spec.name)
    for column in spec.text_columns:
        other = glue_names.get(column)
        if column not in raw.column_names and other in raw.column_names:
            raw = raw.rename_column(other, column)
    missing = [c for c in spec.text_columns if c not in raw.column_names]
    if missing:
        raise ValueError(f"--input {path}: no column {missing[0]!r} for task {spec.name!r}; the file has columns "
                         f"{raw.column_names}. " + _column_hint(spec, tsv=False))
    index = raw["index"] if "index" in raw.column_names else list(range(len(raw)))
    json_lines = builder == "json" and _starts_with_object(path)
    if json_lines:
        def locate(row: int) -> str:
            return f"{path}, line {row + 1}"
    elif builder == "csv":
        def locate(row: int) -> str:
            return f"{path}, data row {row + 1} (line {row + 2} if no field spans lines)"
    else:
        def locate(row: int) -> str:
            return f"{path}, row {row}"
    return _prepare_inputs(spec, raw.select_columns(list(spec.text_columns)), locate), list(index)


def _starts_with_object(path: Path) -> bool:
    """Whether a .json / .jsonl file is JSON Lines (its first character opens an object), so a row is a line."""
    with path.open(encoding="utf-8", errors="replace") as handle:
        return handle.read(64).lstrip()[:1] == "{"


def _prepare_inputs(spec: TaskSpec, raw: Any, locate: Callable[[int], str]) -> Any:
    """Rows to predict in the prepared shape: the text columns validated by the task's kind (`TaskKind.check_text`,
    errors naming the row), then a placeholder `label` (`TaskKind.placeholder_label`; labels are not read when
    predicting). A token-classification words column given as text is split on whitespace."""
    kind = get_kind(spec.kind)
    if kind.level == "token":
        words = spec.text_columns[0]
        if is_text(arrow_column(raw, words).type):
            raw = raw.map(lambda row: {words: (row[words] or "").split()}, desc="Splitting words")
    for column in spec.text_columns:
        kind.check_text(spec, column, arrow_column(raw, column), locate)
    prepared = raw.select_columns(list(spec.text_columns))
    for column in spec.text_columns:
        prepared = cast_text(prepared, column)
    return prepared.add_column(LABEL_COLUMN, [kind.placeholder_label(spec, row) for row in prepared])


# ---- predict ----------------------------------------------------------------------------------------


def predict_file(
    run: str | os.PathLike[str],
    task: str,
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    max_seq_length: int | None = None,
    batch_size: int = 64,
) -> Path:
    """Predict task `task` of a saved model for every row of an input file (see `read_task_inputs`).

    Writes, per row, its index and the prediction of the task's kind: a TSV `index<TAB>prediction` (a label
    name; a number, `%.6g`; a vector or a label set joined with commas; one tag per word joined with spaces;
    the chosen answer), or with an `.jsonl` output one JSON object `{"index": ..., "prediction": ...}` per row
    (lists stay lists). A token-classification row gets one tag per input word; a word past `max_seq_length`
    tokens has none (`null`, `_` in TSV) and a warning says how many. `max_seq_length` defaults to the task's
    own (from its task file), else 128. Missing folders of `output_path` are created; see
    `check_prediction_paths` for what is refused.
    """
    import datasets

    output = check_prediction_paths(input_path, output_path, task)
    model, tokenizer = load_run(run)
    spec = task_spec(model.config, task)
    kind = get_kind(spec.kind)
    length = max_seq_length or spec.max_seq_length or DEFAULT_MAX_SEQ_LENGTH
    with tempfile.TemporaryDirectory() as scratch:  # the loaders' cache and the Trainer's output_dir; nothing stays
        prepared, index = read_task_inputs(spec, input_path, cache_dir=scratch)
        tokenized = tokenize_splits(datasets.DatasetDict({"test": prepared}), spec, tokenizer, length)["test"]
        # Token kinds read where the words start from the tokenised labels (-100 on a word's other pieces).
        positions = tokenized["labels"] if kind.level == "token" else None
        trainer = _inference_trainer(model, tokenizer, [spec], scratch, batch_size)
        # Labels (real or placeholder) are not needed to predict; without them no loss is computed.
        logits = np.asarray(trainer.predict(tokenized.remove_columns("labels")).predictions)
    if positions is not None:
        marks = np.full(logits.shape[:2], IGNORE_INDEX, dtype=np.int64)
        for row, labels in enumerate(positions):
            marks[row, :len(labels)] = labels
        predictions = _one_tag_per_word(kind.predictions(spec, logits, marks),
                                        [len(words) for words in prepared[spec.text_columns[0]]], length)
    else:
        predictions = kind.predictions(spec, logits)
    _write_predictions(output, index, predictions, tags=kind.level == "token")
    return output


#: `--task all`: every task's prediction from one encoder pass per row (`hf_mtl.multi_task_pipeline`).
ALL_TASKS = "all"


def predict_all(
    run: str | os.PathLike[str],
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    max_seq_length: int | None = None,
    batch_size: int = 64,
) -> Path:
    """Every task's prediction for every row of an input file, one encoder pass per row (`hf-mtl predict RUN --task
    all`), through `MultiTaskPipeline`.

    The input has a `text` column and optionally a `text_pair` column (the two texts of a pair, as the pipeline
    takes them), in any format `predict_file` reads; every task reads the same encoding of the row. Writes, per row,
    `{"index": ..., "<task>": <the pipeline's prediction>, ...}` (`.jsonl` output: labels with scores, values, a
    token task's tag groups with their spans), or a TSV with one column per task (the label; the value; the labels
    that apply, joined with commas; a token task's groups as `word/TAG`, joined with spaces). Inputs longer than
    `max_seq_length` tokens (default 128) are truncated. Multiple-choice tasks are left out (they score (context,
    choice) pairs, not one input).
    """
    from .multi_task_pipeline import MultiTaskPipeline

    output = check_prediction_paths(input_path, output_path, ALL_TASKS)
    model, tokenizer = load_run(run)
    with tempfile.TemporaryDirectory() as scratch:
        prepared, index = _read_text_rows(input_path, scratch)
    pair = "text_pair" in prepared.column_names
    rows = [{"text": t, "text_pair": p} for t, p in zip(prepared["text"], prepared["text_pair"])] if pair else list(
        prepared["text"])
    serve = MultiTaskPipeline(model=model, tokenizer=tokenizer, device=model.device)
    predictions = serve(rows, batch_size=batch_size, truncation=True,
                        max_length=max_seq_length or DEFAULT_MAX_SEQ_LENGTH)
    output.parent.mkdir(parents=True, exist_ok=True)
    tasks = model.serving_tasks()
    with output.open("w", encoding="utf-8") as handle:
        if output.suffix.lower() == JSONL_OUTPUT:
            handle.writelines(json.dumps({"index": _json_value(i), **p}, ensure_ascii=False) + "\n"
                              for i, p in zip(index, predictions))
        else:
            handle.write("\t".join(["index", *tasks]) + "\n")
            handle.writelines("\t".join([str(_json_value(i)), *(_tsv_cell(p[t]) for t in tasks)]) + "\n"
                              for i, p in zip(index, predictions))
    return output


def _read_text_rows(path: str | os.PathLike[str], cache_dir: str) -> tuple[Any, list[Any]]:
    """The `text` (and, when present, `text_pair`) column of an input file, validated as `predict_file` does."""
    from .tasks import TaskSpec

    def spec(columns: tuple[str, ...]) -> TaskSpec:
        return TaskSpec(name=ALL_TASKS, kind="classification", num_labels=2, text_columns=columns)

    try:
        return read_task_inputs(spec(("text", "text_pair")), path, cache_dir=cache_dir)
    except ValueError as error:
        if "no column 'text_pair'" not in str(error):  # text_pair is optional; anything else is an error
            raise
    try:
        return read_task_inputs(spec(("text",)), path, cache_dir=cache_dir)
    except ValueError as error:
        raise ValueError(f"{error} (--task all reads a `text` column, and a `text_pair` column for pairs: every "
                         "task reads the same input.)") from None


def _tsv_cell(prediction: Any) -> str:
    """One task's pipeline prediction as a TSV field."""
    if isinstance(prediction, dict):
        value = prediction.get("label", prediction.get("value"))
        return _tsv_field(_json_value(value), tags=False)
    if prediction and "entity_group" in prediction[0]:
        return " ".join(f"{group['word']}/{group['entity_group']}" for group in prediction)
    if prediction and "entity" in prediction[0]:
        return " ".join(f"{entity['word']}/{entity['entity']}" for entity in prediction)
    return ",".join(entry["label"] for entry in prediction)


def _one_tag_per_word(predictions: list[list[Any]], words: list[int], max_seq_length: int) -> list[list[Any]]:
    """Each row's tags padded with None to its number of words (the words cut off by truncation have no tag),
    with a warning saying how many words that is."""
    padded = [list(tags) + [None] * (count - len(tags)) for tags, count in zip(predictions, words)]
    cut = [sum(tag is None for tag in tags) for tags in padded]
    if sum(cut):
        logger.warning(
            "predict: %d word(s) in %d row(s) lie past --max_seq_length %d tokens and have no tag (null in JSON Lines, "
            "%s in TSV); pass a larger --max_seq_length to tag them.", sum(cut), sum(1 for c in cut if c),
            max_seq_length, NO_TAG)
    return padded


def _tsv_field(value: Any, tags: bool) -> str:
    """A prediction as one TSV field: tags joined with spaces, vectors and label sets with commas."""
    if isinstance(value, list):
        return (" " if tags else ",").join(_tsv_field(item, tags) for item in value)
    if value is None:
        return NO_TAG
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _json_value(value: Any) -> Any:
    """A prediction as plain JSON (numpy scalars as Python numbers)."""
    if isinstance(value, list):
        return [_json_value(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _write_predictions(output: Path, index: Sequence[Any], predictions: Sequence[Any], tags: bool) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as handle:
        if output.suffix.lower() == JSONL_OUTPUT:
            handle.writelines(json.dumps({"index": _json_value(i), "prediction": _json_value(p)}, ensure_ascii=False)
                              + "\n" for i, p in zip(index, predictions))
            return
        handle.write("index\tprediction\n")
        handle.writelines(f"{i}\t{_tsv_field(_json_value(p), tags)}\n" for i, p in zip(index, predictions))


def check_prediction_paths(input_path: str | os.PathLike[str], output_path: str | os.PathLike[str], task: str = "TASK") -> Path:
    """Refuse, before any model is loaded, an `--input` that is missing or a folder and an `--output` that is a
    folder, lies under a file, or is the `--input` file itself (writing would destroy the rows being
    predicted). Returns the output path; its missing parent folders are created when it is written."""
    source, output = Path(input_path), Path(output_path)
    if not source.exists():
        raise FileNotFoundError(f"--input {source}: no such file (a relative path is read from {Path.cwd()}). Pass the "
                                "file to predict: a TSV file with a header line naming the task's text columns, or a "
                                ".jsonl / .json / .csv / .parquet file with those columns.")
    if source.is_dir():
        suffixes = (".tsv", *INPUT_FORMATS)
        inputs = sorted(p.name for p in source.iterdir() if p.suffix.lower() in suffixes and p.is_file())[:3]
        example = f" (it holds {', '.join(inputs)})" if inputs else " (it holds no .tsv, .jsonl, .json, .csv or .parquet file)"
        raise ValueError(f"--input {source} is a folder{example}; pass the input file itself"
                         + (f", e.g. --input {source / inputs[0]}." if inputs else "."))
    if output.is_dir():
        raise ValueError(f"--output {output} is a folder; pass the path of the file to write, e.g. --output "
                         f"{output / f'{task}-predictions.tsv'}.")
    for parent in output.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"--output {output}: {parent} is a file, not a folder, so nothing can be written "
                                 "under it. Pass a file path in a folder (missing folders are created).")
            break
    if output.exists() and output.samefile(source):
        raise ValueError(f"--output {output} is the --input file: writing the predictions would replace the rows being "
                         f"predicted. Pass another path, e.g. --output {output.with_name(output.stem + '-predictions.tsv')}.")
    return output
