"""Model cards: the README.md of a multi-task run and of a single-task export.

* `write_model_card(...)` writes the README.md of a multi-task repository: base model, tasks and
  datasets, the weighting strategy (formula and hyperparameters), dev metrics and GLUE score,
  training hyperparameters, the training curves (`hf_mtl.plotting`) and a usage snippet
  (`render_model_card` gives the text). `MultiTaskTrainer.create_model_card` (hence
  `trainer.push_to_hub()` and `hf-mtl train --push_to_hub`) calls it; `write_run_model_card(RUN_DIR)`
  does the same from a saved run's files (`hf-mtl push`).
* `render_task_card(...)` is the card of one task exported by `hf_mtl.export`.
* What the cards list, from a run: `training_hyperparameters` (from `TrainingArguments`),
  `base_model_id` (the Hub id the encoder came from), `latest_eval_metrics` / `run_eval_metrics`
  (the latest `eval_*` values of a log history / a run folder).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .modeling import (
    DEFAULT_MODEL,
    PACKAGED_MODELS,
    MultiTaskConfig,
    resolve_model_path,
)
from .tasks import GLUE_TASKS, TaskSpec

logger = logging.getLogger(__name__)

MODEL_CARD = "README.md"
GLUE_DATASET = "nyu-mll/glue"
#: The run's TrainingArguments as JSON (written by `hf-mtl train`): read instead of the Trainer's
#: pickled training_args.bin, so that a run folder from someone else never executes code.
TRAINING_ARGS_FILE = "training_args.json"
# Example inputs of the usage snippet: one for single-sentence tasks, one pair for sentence-pair tasks.
_EXAMPLE_SENTENCE = "A gripping, beautifully acted film."
_EXAMPLE_PAIR = ("A man is playing a guitar.", "A man plays the guitar.")


def base_model_id(encoder_config: Any) -> str | None:
    """The Hub id the encoder was loaded from; a packaged offline copy maps back to its Hub id."""
    name = getattr(encoder_config, "_name_or_path", None) or (
        encoder_config.get("_name_or_path") if isinstance(encoder_config, Mapping) else None
    )
    if not name:
        return None
    for hub_id in PACKAGED_MODELS:
        if resolve_model_path(hub_id) != hub_id and Path(resolve_model_path(hub_id)) == Path(name):
            # PACKAGED_MODELS keys are lower-cased for matching; give the Hub's spelling back.
            return DEFAULT_MODEL if DEFAULT_MODEL.lower() == hub_id else hub_id
    return None if os.path.isabs(name) or os.path.exists(name) else name


def latest_eval_metrics(log_history: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """The latest value of every `eval_*` key in a Trainer log history."""
    metrics: dict[str, float] = {}
    for entry in log_history:
        metrics.update({k: float(v) for k, v in entry.items() if k.startswith("eval_") and isinstance(v, (int, float))})
    return metrics


def training_hyperparameters(args: Any, global_step: int | None = None) -> dict[str, Any]:
    """The hyperparameters a model card lists, from `TrainingArguments`."""
    def plain(value: Any) -> Any:
        return getattr(value, "value", value)

    values: dict[str, Any] = {
        "learning_rate": args.learning_rate,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "processes": getattr(args, "world_size", 1),
        "total_train_batch_size (per task)": args.per_device_train_batch_size * getattr(args, "world_size", 1)
        * args.gradient_accumulation_steps,
        "optimizer": plain(args.optim),
        "lr_scheduler_type": plain(args.lr_scheduler_type),
        "warmup_steps": args.warmup_steps,
        "weight_decay": args.weight_decay,
        "max_grad_norm": args.max_grad_norm,
        "max_steps" if args.max_steps > 0 else "num_train_epochs": args.max_steps if args.max_steps > 0 else args.num_train_epochs,
        "seed": args.seed,
        "mixed_precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "no",
    }
    if global_step is not None:
        values["optimizer_steps_done"] = global_step
    return values


def write_model_card(
    output_dir: str | os.PathLike[str],
    config: MultiTaskConfig,
    log_history: Sequence[Mapping[str, Any]] = (),
    hyperparameters: Mapping[str, Any] | None = None,
    model_id: str | None = None,
    base_model: str | None = None,
    model_name: str | None = None,
    language: str | list[str] | None = None,
    license: str | None = None,
    tags: str | list[str] | None = None,
) -> Path:
    """Write `README.md` (and the training-curve PNGs, when matplotlib is installed) to `output_dir`."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    image = None
    if log_history:
        try:
            from .plotting import SUMMARY_PNG, collect_curves, plot_curves

            curves = collect_curves(log_history, [t["name"] for t in config.tasks])
            if not curves.empty:
                plot_curves(curves, output)
                image = SUMMARY_PNG
        except ImportError as error:
            logger.warning("The model card has no training curves: %s", error)
    card = render_model_card(
        config,
        eval_metrics=latest_eval_metrics(log_history),
        hyperparameters=hyperparameters or {},
        model_id=model_id or str(output),
        base_model=base_model or base_model_id(config.encoder),
        image=image,
        model_name=model_name,
        language=language,
        license=license,
        tags=tags,
    )
    path = output / MODEL_CARD
    path.write_text(card, encoding="utf-8")
    return path


def write_run_model_card(run_dir: str | os.PathLike[str], model_id: str | None = None, **kwargs: Any) -> Path:
    """`write_model_card` for a saved training run, from its config.json, trainer_state.json,
    eval_results.json and training_args.json."""
    from transformers import AutoConfig

    from .plotting import load_log_history

    run = Path(run_dir)
    config = AutoConfig.from_pretrained(run)
    try:
        history = load_log_history(run)
    except FileNotFoundError:
        history = []
    if not history and (run / "eval_results.json").is_file():
        history = [{**json.loads((run / "eval_results.json").read_text()), "step": 0}]
    hyperparameters: dict[str, Any] = {}
    if (run / TRAINING_ARGS_FILE).is_file():
        args = SimpleNamespace(**json.loads((run / TRAINING_ARGS_FILE).read_text()))
        steps = max((int(h["step"]) for h in history if "step" in h), default=None)
        hyperparameters = training_hyperparameters(args, steps)
    return write_model_card(run, config, history, hyperparameters, model_id=model_id, **kwargs)


def run_eval_metrics(run_dir: str | os.PathLike[str]) -> dict[str, float]:
    """The latest `eval_*` values of a run folder: from its trainer_state.json, else its eval_results.json."""
    from .plotting import load_log_history

    run = Path(run_dir)
    try:
        return latest_eval_metrics(load_log_history(run))
    except FileNotFoundError:
        path = run / "eval_results.json"
        return latest_eval_metrics([json.loads(path.read_text())]) if path.is_file() else {}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _dataset_cell(spec: TaskSpec) -> str:
    glue = GLUE_TASKS.get(spec.name)
    if glue is not None and glue.hub_config:
        return f"[{GLUE_DATASET}](https://huggingface.co/datasets/{GLUE_DATASET}) (`{glue.hub_config}`)"
    return "user-provided"


def _metrics_table(specs: Sequence[TaskSpec], eval_metrics: Mapping[str, float]) -> list[str]:
    """One row per evaluation split (`eval_<key>_<metric>`), one column per metric, eval loss last."""
    bookkeeping = ("runtime", "samples_per_second", "steps_per_second", "model_preparation_time")
    splits = {key: f"{key} ({split})" for spec in specs for split, key in spec.eval_keys().items()}
    by_length = sorted(splits, key=len, reverse=True)  # `mnli_matched` before a task named `mnli`
    values: dict[str, dict[str, float]] = {}
    for name, value in eval_metrics.items():
        rest = name.removeprefix("eval_")
        key = next((k for k in by_length if rest.startswith(f"{k}_")), None)
        if name.startswith("eval_") and key is not None and not rest.endswith(bookkeeping):
            values.setdefault(key, {})[rest[len(key) + 1:]] = value
    rows = [(splits[key], values[key]) for key in splits if key in values]
    columns = dict.fromkeys(m for _, row in rows for m in row if m != "loss")
    if not rows:
        return [("No evaluation results were recorded for this run (train with `--do_eval`, or run "
                 "`hf-mtl evaluate`).")]
    header = [*columns, "loss"]
    lines = ["| task (split) | " + " | ".join("eval loss" if c == "loss" else c for c in header) + " |",
             "|---|" + "---:|" * len(header)]
    for label, row in rows:
        lines.append(f"| {label} | " + " | ".join(_fmt(row[c]) if c in row else "" for c in header) + " |")
    if "eval_glue_score" in eval_metrics:
        lines += ["", (f"**GLUE score** (macro average over tasks; a task with two metrics counts their mean): "
                       f"**{_fmt(eval_metrics['eval_glue_score'])}**")]
    return lines


def _weighting_lines(weighting: Mapping[str, Any] | None) -> list[str]:
    if not weighting:
        return ["Not recorded (the model was not trained by `MultiTaskTrainer`)."]
    from .weighting import get_weighting_class

    name = weighting.get("name", "?")
    try:
        description = get_weighting_class(name).description
    except ValueError:
        description = "a strategy unknown to this version of hf_mtl"
    hparams = {k: v for k, v in weighting.items() if k != "name"}
    settings = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in hparams.items()) or "none"
    return [f"`--weighting {name}`: {description}.", "", (f"Hyperparameters: {settings}. The effective weight of "
             "task i is dF/dL_i, logged as `weight_<task>` (see the curves below).")]


def _usage_snippet(model_id: str, specs: Sequence[TaskSpec]) -> list[str]:
    examples = {spec.name: (_EXAMPLE_SENTENCE,) if len(spec.text_columns) == 1 else _EXAMPLE_PAIR for spec in specs}
    return [
        "```python",
        "import torch",
        "from transformers import AutoModel, AutoTokenizer",
        "",
        "import hf_mtl.modeling  # registers the hf_mtl model type with AutoModel",
        "",
        f"repo = {json.dumps(model_id)}",
        "tokenizer = AutoTokenizer.from_pretrained(repo)",
        "model = AutoModel.from_pretrained(repo).eval()",
        f"examples = {json.dumps(examples)}",
        "for task in model.config.tasks:",
        "    inputs = tokenizer(*examples[task[\"name\"]], return_tensors=\"pt\")",
        "    with torch.no_grad():",
        "        logits = model(**inputs, task=task[\"name\"]).logits[0]",
        "    if task[\"kind\"] == \"regression\":",
        "        print(task[\"name\"], logits.item())",
        "    else:",
        "        names = task[\"label_names\"] or [str(i) for i in range(task[\"num_labels\"])]",
        "        print(task[\"name\"], names[logits.argmax().item()])",
        "```",
    ]


def render_model_card(
    config: MultiTaskConfig,
    eval_metrics: Mapping[str, float],
    hyperparameters: Mapping[str, Any],
    model_id: str,
    base_model: str | None = None,
    image: str | None = None,
    model_name: str | None = None,
    language: str | list[str] | None = None,
    license: str | None = None,
    tags: str | list[str] | None = None,
) -> str:
    """The model card (README.md text, YAML metadata first) of a multi-task model."""
    from huggingface_hub import ModelCardData

    specs = config.task_specs
    extra_tags = [tags] if isinstance(tags, str) else list(tags or [])
    glue = any(spec.name in GLUE_TASKS for spec in specs)
    metadata = ModelCardData(
        base_model=base_model,
        datasets=[GLUE_DATASET] if glue else None,
        language=language,
        license=license,
        library_name="transformers",
        model_name=model_name,
        tags=list(dict.fromkeys(["hf_mtl", "multi-task", "text-classification", *extra_tags])),
    )
    title = model_name or model_id.rstrip("/").split("/")[-1]
    encoder = config.encoder
    lines = [
        "---", metadata.to_yaml(), "---", "",
        f"# {title}", "",
        ("A multi-task model trained with hf_mtl: one shared "
         f"{encoder.model_type.upper()} encoder (fine-tuned from "
         f"{f'[{base_model}](https://huggingface.co/{base_model})' if base_model else 'a local encoder'}, "
         f"{encoder.num_hidden_layers} layers, hidden size {encoder.hidden_size}) and one classification or "
         "regression head per task (dropout + linear layer on the pooled output, as in "
         "`BertForSequenceClassification`)."), "",
        "## Tasks", "",
        "| task | kind | labels | dataset |", "|---|---|---|---|",
        *(f"| {s.name} | {s.kind} | {', '.join(s.label_names) if s.label_names else ('float' if s.kind == 'regression' else s.num_labels)} "
          f"| {_dataset_cell(s)} |" for s in specs),
        "",
        "## Loss weighting", "", *_weighting_lines(config.weighting), "",
        "## Evaluation (dev sets)", "", *_metrics_table(specs, eval_metrics), "",
        "## Training hyperparameters", "",
    ]
    if hyperparameters:
        lines += [f"- {name}: {_fmt(value)}" for name, value in hyperparameters.items()]
    else:
        lines.append("Not recorded.")
    lines += ["", "## Training curves", ""]
    if image:
        lines.append(f"![Per-task training loss, effective weights and evaluation metrics]({image})")
    else:
        lines.append('No curves: the card was written without a log history or without matplotlib '
                     '(`pip install "hf_mtl[plot]"`).')
    lines += [
        "", "## Usage", "",
        ("Needs the `hf_mtl` package (it defines the `hf_mtl` model type). `forward(..., task=NAME)` runs one "
         "task's head:"), "",
        *_usage_snippet(model_id, specs), "",
        ("One task as a standard `AutoModelForSequenceClassification` (works with `pipeline`, no hf_mtl "
         "needed to load it): `hf-mtl export RUN_DIR --task NAME --output DIR`."), "",
    ]
    return "\n".join(lines)


def render_task_card(spec: TaskSpec, config: Any, source: MultiTaskConfig, eval_metrics: Mapping[str, float],
                     model_id: str) -> str:
    """The model card of a single-task export."""
    from huggingface_hub import ModelCardData

    base_model = base_model_id(source.encoder)
    metadata = ModelCardData(
        base_model=base_model,
        datasets=[GLUE_DATASET] if spec.name in GLUE_TASKS else None,
        library_name="transformers",
        pipeline_tag="text-classification",
        tags=["hf_mtl", spec.name],
    )
    example = json.dumps(_EXAMPLE_SENTENCE) if len(spec.text_columns) == 1 else (
        "{" + f'"text": {json.dumps(_EXAMPLE_PAIR[0])}, "text_pair": {json.dumps(_EXAMPLE_PAIR[1])}' + "}")
    task_metrics = {k: v for k, v in eval_metrics.items() if k != "eval_glue_score"}
    return "\n".join([
        "---", metadata.to_yaml(), "---", "",
        f"# {model_id.rstrip('/').split('/')[-1]}", "",
        (f"Task `{spec.name}` ({spec.kind}; dataset {_dataset_cell(spec)}) exported from an hf_mtl multi-task model "
         f"as a standard `{config.architectures[0]}`: the shared encoder plus this task's head, with the same logits. "
         f"Labels: {', '.join(f'{i} = {name}' for i, name in config.id2label.items())}"
         f"{' (the regression output)' if spec.kind == 'regression' else ''}."), "",
        "Weighting used in multi-task training: " + _weighting_lines(source.weighting)[0], "",
        "## Evaluation (dev set, measured on the multi-task model)", "",
        *_metrics_table([spec], task_metrics), "",
        "## Usage", "",
        "```python",
        "from transformers import pipeline",
        "",
        f"classifier = pipeline(\"text-classification\", model={json.dumps(model_id)})",
        f"print(classifier({example}))",
        "```", "",
    ])
