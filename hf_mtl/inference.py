"""Evaluation and prediction with a saved multi-task model (a run folder or a Hub id).

* `evaluate_run(RUN)` (`hf-mtl evaluate`) evaluates it on its tasks' dev sets through
  `MultiTaskTrainer.evaluate`, with the same `eval_*` keys as evaluation during training.
* `predict_file(RUN, task, in.tsv, out.tsv)` (`hf-mtl predict`) predicts one task for every row of a
  TSV file read by `read_task_inputs` (through `hf_mtl.data.read_tsv`) and writes `index<TAB>prediction`.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .data import LABEL_COLUMN, glue_column_names, read_tsv, tokenize_splits
from .hub import load_run, select_tasks, task_spec
from .modeling import MultiTaskModel
from .tasks import TaskSpec


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


def evaluate_run(
    run: str | os.PathLike[str],
    tasks: str | Sequence[str] | None = None,
    data_args: Any = None,
    output_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
) -> dict[str, float]:
    """Evaluate a saved multi-task model (run folder or Hub id) on its tasks' evaluation splits.

    Returns and writes (`output_dir/eval_results.json`, default `RUN/evaluate` or `./evaluate-<name>`)
    the same keys as evaluation during training: `eval_<task>_<metric>`, `eval_<task>_loss`,
    `eval_glue_score`. `data_args` is a `hf_mtl.arguments.DataArguments` (glue_dir, max_seq_length, max_eval_samples).
    """
    from .arguments import DataArguments
    from .pipeline import build_datasets

    if output_dir is None:
        output_dir = Path(run) / "evaluate" if Path(run).is_dir() else Path(f"evaluate-{str(run).rstrip('/').split('/')[-1]}")
    for folder in (Path(output_dir), *Path(output_dir).parents):
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"--output_dir {output_dir}: {folder} is a file, not a folder; eval_results.json goes into "
                             "a folder (missing folders are created). Pass another --output_dir.")
    model, tokenizer = load_run(run)
    specs = select_tasks(model.config, tasks)
    data_args = data_args or DataArguments()
    # build_datasets tokenises every split it loads; one training row is enough, training sets are not used.
    _, eval_sets = build_datasets(specs, tokenizer, dataclasses.replace(data_args, max_train_samples=1))
    if not eval_sets:
        raise ValueError(f"evaluate: no evaluation split found for tasks {[s.name for s in specs]} in the data given "
                         "(--glue_dir / $GLUE_DIR, else the Hub).")
    trainer = _inference_trainer(model, tokenizer, specs, output_dir, batch_size, eval_sets)
    metrics = trainer.evaluate()
    metrics.pop("epoch", None)  # the Trainer's log adds its epoch counter (0: nothing was trained here)
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    return metrics


def read_task_inputs(spec: TaskSpec, path: str | os.PathLike[str]) -> tuple[Any, list[str]]:
    """Rows of a TSV file with a header for `spec`, as a prepared dataset, and each row's index.

    Text columns are found under the task's names (`sentence`, `sentence1`/`sentence2`, ...) or the
    original GLUE header names (`#1 String`, ...); a label column, when present, is validated and kept,
    else a placeholder label is added (and dropped again by `predict_file`). An `index` column (GLUE test
    files) gives the row indices; otherwise rows count from 0. Quoting is off, as for the GLUE files.
    """
    path = Path(path)
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
            f"Name the text column(s) {list(spec.text_columns)} in the first line (tab-separated)."
        )
    ragged = table.ragged(len(header))
    if ragged is not None:
        raise ValueError(f"--input {path}, line {ragged[0]}: {len(ragged[1])} tab-separated fields, the header has "
                         f"{len(header)}. Fewer means a missing field, more a tab inside a text; fix the line.")
    prepared = table.to_split(spec, positions, default_label="0")
    index = [row[header.index("index")] for row in table.rows] if "index" in header else [str(i) for i in range(len(table.rows))]
    return prepared, index


def predict_file(
    run: str | os.PathLike[str],
    task: str,
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    max_seq_length: int = 128,
    batch_size: int = 64,
) -> Path:
    """Predict task `task` of a saved model for every row of a TSV file (see `read_task_inputs`).

    Writes a TSV with `index` and `prediction`: the label name for classification, the float for regression.
    Missing folders of `output_path` are created; see `check_prediction_paths` for what is refused.
    """
    import datasets

    output = check_prediction_paths(input_path, output_path, task)
    model, tokenizer = load_run(run)
    spec = task_spec(model.config, task)
    prepared, index = read_task_inputs(spec, input_path)
    tokenized = tokenize_splits(datasets.DatasetDict({"test": prepared}), spec, tokenizer, max_seq_length)["test"]
    with tempfile.TemporaryDirectory() as scratch:  # the Trainer wants an output_dir; predicting writes nothing there
        trainer = _inference_trainer(model, tokenizer, [spec], scratch, batch_size)
        # Labels (real or placeholder) are not needed to predict; without them no loss is computed.
        logits = trainer.predict(tokenized.remove_columns("labels")).predictions
    if spec.kind == "regression":
        predictions = [f"{value:.6g}" for value in logits.reshape(-1).tolist()]
    else:
        names = list(spec.label_names or (str(i) for i in range(spec.num_labels)))
        predictions = [names[i] for i in logits.argmax(axis=-1).tolist()]
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as handle:
        handle.write("index\tprediction\n")
        handle.writelines(f"{i}\t{p}\n" for i, p in zip(index, predictions))
    return output


def check_prediction_paths(input_path: str | os.PathLike[str], output_path: str | os.PathLike[str], task: str = "TASK") -> Path:
    """Refuse, before any model is loaded, an `--input` that is missing or a folder and an `--output` that is a
    folder, lies under a file, or is the `--input` file itself (writing would destroy the rows being
    predicted). Returns the output path; its missing parent folders are created when it is written."""
    source, output = Path(input_path), Path(output_path)
    if not source.exists():
        raise FileNotFoundError(f"--input {source}: no such file (a relative path is read from {Path.cwd()}). Pass the "
                                "TSV file to predict, with a header line naming the task's text columns.")
    if source.is_dir():
        tsv = sorted(p.name for p in source.glob("*.tsv"))[:3]
        example = f" (it holds {', '.join(tsv)})" if tsv else " (it holds no .tsv file)"
        raise ValueError(f"--input {source} is a folder{example}; pass the TSV file itself"
                         + (f", e.g. --input {source / tsv[0]}." if tsv else "."))
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
