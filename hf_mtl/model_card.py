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

from .kinds import get_kind
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
# Example inputs of the usage snippets: one for single-sentence tasks, one pair for sentence-pair tasks, the words
# of a sentence for token classification, a context and endings for multiple choice.
_EXAMPLE_SENTENCE = "A gripping, beautifully acted film."
_EXAMPLE_PAIR = ("A man is playing a guitar.", "A man plays the guitar.")
_EXAMPLE_WORDS = ("Tim", "Cook", "visited", "London", "on", "Monday", ".")
_EXAMPLE_CONTEXT = "A man is playing a guitar on stage."
_EXAMPLE_CHOICES = ("The crowd listens to the music.", "He is asleep in bed.", "The guitar is made of ice.",
                    "He swims across the lake.")


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


def eval_metrics_at(log_history: Iterable[Mapping[str, Any]], step: int) -> dict[str, float]:
    """Every `eval_*` value logged at training step `step` (one evaluation during training)."""
    return latest_eval_metrics(entry for entry in log_history if entry.get("step") == step)


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
        "task_sampling": getattr(args, "task_sampling", "all_per_step"),
        "optimizer": plain(args.optim),
        "lr_scheduler_type": plain(args.lr_scheduler_type),
        "warmup_steps": args.warmup_steps,
        "weight_decay": args.weight_decay,
        "max_grad_norm": args.max_grad_norm,
        "max_steps" if args.max_steps > 0 else "num_train_epochs": args.max_steps if args.max_steps > 0 else args.num_train_epochs,
        "seed": args.seed,
        "mixed_precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "no",
    }
    schedule = getattr(args, "sampling_schedule", "constant")
    if schedule != "constant" or getattr(args, "sampling_alpha", None) is not None:
        values["sampling_alpha"] = {"constant": f"{args.sampling_alpha}",
                                    "linear": f"{args.sampling_alpha or 0.0} -> {args.sampling_alpha_end} (linear)",
                                    "anneal": "1 - 0.8 (e - 1) / (E - 1) over epochs e = 1..E (anneal)"}[schedule]
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
    task_bests: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write `README.md` (and the training-curve PNGs, when matplotlib is installed) to `output_dir`; `task_bests`:
    each task's best evaluation during training (`hf_mtl.task_best`), listed with its checkpoint."""
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
        task_bests=task_bests,
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
    from .task_best import TRAINER_STATE, read_task_bests  # here: it imports the Trainer's callbacks (and so peft)

    bests = read_task_bests(run / TRAINER_STATE) if (run / TRAINER_STATE).is_file() else {}
    return write_model_card(run, config, history, hyperparameters, model_id=model_id, task_bests=bests, **kwargs)


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


def _source_cell(spec: TaskSpec) -> str:
    """Where a task's data came from, for the cards: the GLUE dataset, or its task file's source (file names, a Hub
    dataset id, a folder's name; never a local absolute path)."""
    glue = GLUE_TASKS.get(spec.name)
    source = spec.source
    if source is None:
        if glue is not None and glue.hub_config:
            return f"[{GLUE_DATASET}](https://huggingface.co/datasets/{GLUE_DATASET}) (`{glue.hub_config}`)"
        return "user-provided"
    kind = source.get("type")
    if kind == "files":
        files = [f"`{Path(str(source[f'{split}_file'])).name}` ({split})"
                 for split in ("train", "validation", "test") if source.get(f"{split}_file")]
        return "files " + ", ".join(files)
    if kind == "hub":
        dataset = str(source.get("dataset", "?"))
        config = f" (`{source['dataset_config']}`)" if source.get("dataset_config") else ""
        if _is_hub_dataset(dataset):
            return f"[{dataset}](https://huggingface.co/datasets/{dataset}){config}"
        return f"local dataset folder `{Path(dataset).name}`{config}"
    if kind == "disk":
        return f"saved dataset folder `{Path(str(source.get('load_from_disk', '?'))).name}`"
    return "user-provided"


def _is_hub_dataset(name: str) -> bool:
    """Whether a `dataset:` value names a Hub dataset (rather than a local folder)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if os.path.isabs(name) or name.startswith((".", "~")) or os.path.exists(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _hub_datasets(specs: Sequence[TaskSpec]) -> list[str] | None:
    """The Hub datasets of a card's metadata: GLUE for GLUE tasks, and the Hub ids of `dataset:` sources."""
    names: list[str] = []
    for spec in specs:
        if spec.source is None and spec.name in GLUE_TASKS:
            names.append(GLUE_DATASET)
        elif spec.source is not None and spec.source.get("type") == "hub" and _is_hub_dataset(str(spec.source.get("dataset"))):
            names.append(str(spec.source["dataset"]))
    return list(dict.fromkeys(names)) or None


#: Label names listed in a tasks table cell before the rest are only counted.
_MAX_LISTED_LABELS = 12


def _labels_cell(spec: TaskSpec) -> str:
    """A task's label set for the cards: the names (or how many), float / a vector for regression, the choices."""
    count = int(spec.num_labels or 0)
    if spec.kind == "regression":
        return "float" if count <= 1 else f"vector of {count} floats"
    if spec.kind == "multiple_choice":
        names = f": {', '.join(spec.label_names)}" if spec.label_names else ""
        return f"{count} choices{names}"
    unit = {"token_classification": "tags", "multi_label": "labels"}.get(spec.kind, "classes")
    if not spec.label_names:
        return f"{count} {unit} (ids)"
    names = list(spec.label_names)
    shown = ", ".join(names[:_MAX_LISTED_LABELS])
    return shown if len(names) <= _MAX_LISTED_LABELS else f"{shown}, ... ({len(names)} {unit})"


def _pooling_cell(spec: TaskSpec, config: MultiTaskConfig) -> str:
    if get_kind(spec.kind).level == "token":
        return "none (every token)"
    return f"`{config.task_pooling(spec)}`"


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
    elif "eval_score" in eval_metrics:
        lines += ["", (f"**Score** (macro average over tasks of each task's mean metric): "
                       f"**{_fmt(eval_metrics['eval_score'])}**")]
    return lines


def _task_best_lines(specs: Sequence[TaskSpec], task_bests: Mapping[str, Mapping[str, Any]] | None) -> list[str]:
    """The card's table of each task's best evaluation during training and the checkpoint that holds it."""
    if not task_bests:
        return []
    lines = ["## Each task's best checkpoint", "",
             ("Each task's best evaluation during training and the checkpoint saved at that step (kept out of "
              "`save_total_limit`'s rotation). Chosen on the dev sets, so these values are optimistic estimates. "
              "`hf-mtl export RUN_DIR --task NAME --best` exports a task from its own best checkpoint."), "",
             "| task | ranked by | best value | step | checkpoint |", "|---|---|---:|---:|---|"]
    for spec in specs:
        record = task_bests.get(spec.name)
        if record:
            order = "higher is better" if record.get("greater_is_better", True) else "lower is better"
            lines.append(f"| {spec.name} | {record['metric']} ({order}) | {_fmt(record['value'])} | {record['step']} "
                         f"| {record['checkpoint']} |")
    return [*lines, ""]


def best_checkpoint_note(task: str, record: Mapping[str, Any]) -> str:
    """What an export from a task's best checkpoint says about where it comes from."""
    return (f"Exported from `{record['checkpoint']}`, the step at which task `{task}` was best during training "
            f"(step {record['step']}: {record['metric']} = {_fmt(record['value'])}, "
            f"{'higher' if record.get('greater_is_better', True) else 'lower'} is better), not from the final model. "
            "That step was chosen on the dev set, so the dev metrics below are optimistic.")


def _lora_lines(config: Any) -> list[str]:
    """A LoRA run: what was adapted, and where the adapter is (the run folder holds the whole model too)."""
    peft = getattr(config, "peft", None)
    if not peft:
        return []
    targets = peft.get("target_modules")
    targets = ", ".join(targets) if isinstance(targets, list | tuple) else targets
    return ["## LoRA on the encoder", "",
            (f"The encoder was trained through a LoRA adapter (peft; rank {peft.get('r')}, alpha "
             f"{peft.get('lora_alpha')}, dropout {peft.get('lora_dropout')}, on {targets}); the heads were trained in "
             "full. The adapter alone is in `encoder_adapter/` (peft's format); `hf-mtl export` merges it into the "
             "encoder, so an exported task needs no peft."), ""]


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


def _choices_example(count: int) -> list[str]:
    endings = list(_EXAMPLE_CHOICES)
    return [endings[i] if i < len(endings) else f"Choice {i + 1}." for i in range(max(count, 2))]


def _example(spec: TaskSpec) -> Any:
    """The usage snippet's input for a task: a text (or pair) as a 1-tuple / 2-tuple, a list of words, or a
    context with its choices."""
    if spec.kind == "token_classification":
        return list(_EXAMPLE_WORDS)
    if spec.kind == "multiple_choice":
        return [_EXAMPLE_CONTEXT, _choices_example(int(spec.num_labels or 2))]
    return [_EXAMPLE_SENTENCE] if len(spec.text_columns) == 1 else list(_EXAMPLE_PAIR)


#: How the usage snippet tokenises, then prints, a task of each kind (only the kinds of the model's tasks appear).
_SNIPPET_INPUTS = {
    "token_classification": [
        "inputs = tokenizer(example, is_split_into_words=True, return_tensors=\"pt\")",
    ],
    "multiple_choice": [
        "context, choices = example",
        "inputs = tokenizer([context] * len(choices), choices, padding=True, return_tensors=\"pt\")",
        "inputs = {key: value.unsqueeze(0) for key, value in inputs.items()}  # (1, choices, tokens)",
    ],
}
_SNIPPET_OUTPUTS = {
    "regression": [
        "print(name, logits.tolist() if task[\"num_labels\"] > 1 else logits.item())",
    ],
    "multi_label": [
        "print(name, [names[i] for i in (logits > 0).nonzero().flatten().tolist()])  # every label with logit > 0",
    ],
    "token_classification": [
        "words = inputs.word_ids()  # the tag of a word is the one predicted at its first piece",
        "starts = [i for i, w in enumerate(words) if w is not None and (i == 0 or words[i - 1] != w)]",
        "print(name, \" \".join(names[t] for t in logits.argmax(-1)[starts].tolist()))",
    ],
    "multiple_choice": [
        "print(name, example[1][logits.argmax().item()])",
    ],
    "classification": [
        "print(name, names[logits.argmax().item()])",
    ],
}


def _usage_snippet(model_id: str, specs: Sequence[TaskSpec]) -> list[str]:
    examples = {spec.name: _example(spec) for spec in specs}
    kinds = list(dict.fromkeys(spec.kind for spec in specs))

    def branches(table: Mapping[str, list[str]], default: list[str], indent: str) -> list[str]:
        """`if kind == ...: ... elif ... else: default` over the kinds present that `table` handles."""
        handled = [kind for kind in kinds if kind in table]
        if not handled:
            return [indent + line for line in default]
        lines: list[str] = []
        for i, kind in enumerate(handled):
            lines.append(f"{indent}{'if' if i == 0 else 'elif'} kind == {json.dumps(kind)}:")
            lines += [f"{indent}    {line}" for line in table[kind]]
        if default and any(kind not in table for kind in kinds):
            lines.append(f"{indent}else:")
            lines += [f"{indent}    {line}" for line in default]
        return lines

    outputs = {kind: lines for kind, lines in _SNIPPET_OUTPUTS.items() if kind != "classification"}
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
        "    name, kind, example = task[\"name\"], task[\"kind\"], examples[task[\"name\"]]",
        "    names = task[\"label_names\"] or [str(i) for i in range(task[\"num_labels\"])]",
        *branches(_SNIPPET_INPUTS, ["inputs = tokenizer(*example, return_tensors=\"pt\")"], "    "),
        "    with torch.no_grad():",
        "        logits = model(**inputs, task=name).logits[0]",
        *branches(outputs, _SNIPPET_OUTPUTS["classification"], "    "),
        "```",
    ]


#: What a task's head reads, by the level of its kind, for the card's introduction.
_HEADS = {
    "sequence": "on the pooled output for sentence-level tasks (as in `BertForSequenceClassification`)",
    "token": "on every token's hidden state for token classification (as in `BertForTokenClassification`)",
    "choice": ("on the pooled output of each (context, choice) pair, one score per choice, for multiple choice (as in "
               "`BertForMultipleChoice`)"),
}
#: The Hub's pipeline tag of each kind's export.
_PIPELINE_TAGS = {"token": "token-classification", "choice": "multiple-choice", "sequence": "text-classification"}


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
    task_bests: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """The model card (README.md text, YAML metadata first) of a multi-task model."""
    from huggingface_hub import ModelCardData

    specs = config.task_specs
    extra_tags = [tags] if isinstance(tags, str) else list(tags or [])
    levels = list(dict.fromkeys(get_kind(spec.kind).level for spec in specs)) or ["sequence"]
    metadata = ModelCardData(
        base_model=base_model,
        datasets=_hub_datasets(specs),
        language=language,
        license=license,
        library_name="transformers",
        model_name=model_name,
        tags=list(dict.fromkeys(["hf_mtl", "multi-task", *(_PIPELINE_TAGS[level] for level in levels), *extra_tags])),
    )
    title = model_name or model_id.rstrip("/").split("/")[-1]
    encoder = config.encoder
    kinds = sorted({get_kind(spec.kind).export_class for spec in specs})
    lines = [
        "---", metadata.to_yaml(), "---", "",
        f"# {title}", "",
        ("A multi-task model trained with hf_mtl: one shared "
         f"{encoder.model_type.upper()} encoder (fine-tuned from "
         f"{f'[{base_model}](https://huggingface.co/{base_model})' if base_model else 'a local encoder'}, "
         f"{encoder.num_hidden_layers} layers, hidden size {encoder.hidden_size}) and one head per task (dropout + a "
         f"linear layer: {'; '.join(_HEADS[level] for level in levels)})."), "",
        "## Tasks", "",
        "| task | kind | labels | pooling | source |", "|---|---|---|---|---|",
        *(f"| {s.name} | {s.kind} | {_labels_cell(s)} | {_pooling_cell(s, config)} | {_source_cell(s)} |" for s in specs),
        "",
        ("Pooling is how a sentence-level or multiple-choice head reads the encoder: `pooler` (the encoder's pooler "
         "output), `cls` (the first token) or `mean` (the mean over tokens)."), "",
        *_lora_lines(config),
        "## Loss weighting", "", *_weighting_lines(config.weighting), "",
        "## Evaluation (dev sets)", "", *_metrics_table(specs, eval_metrics), "",
        *_task_best_lines(specs, task_bests),
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
        (f"One task as a standard transformers model ({' / '.join(f'`{k}`' for k in kinds)}, by the task's kind; it "
         "works with `pipeline` and needs no hf_mtl to load): `hf-mtl export RUN_DIR --task NAME --output DIR`. "
         "A sentence-level or multiple-choice task with `cls` or `mean` pooling (which no standard head reads) exports "
         "as a custom-code model instead: loading it needs `trust_remote_code=True`, still no hf_mtl."), "",
    ]
    return "\n".join(lines)


#: What the exported model is, by the level of its kind, for the export's card.
_EXPORT_WORDS = {
    "token": "token classification: one tag per word piece (a word's tag is the one at its first piece)",
    "choice": "multiple choice: one score per (context, choice) pair, the highest score is the answer",
}


def _export_description(spec: TaskSpec, config: Any) -> str:
    level = get_kind(spec.kind).level
    if level in _EXPORT_WORDS:
        what = _EXPORT_WORDS[level]
    elif spec.kind == "multi_label":
        what = "multi-label classification: one sigmoid per label, every label with probability > 0.5 applies"
    elif spec.kind == "regression":
        what = "regression: the raw outputs are the predicted " + ("value" if config.num_labels == 1 else "vector")
    else:
        what = "single-label classification: the highest-scoring class"
    if level == "choice":
        labels = "" if not spec.label_names else f" Choices: {', '.join(spec.label_names)}."
    else:
        labels = (f" {'Tags' if level == 'token' else 'Labels'}: "
                  f"{', '.join(f'{i} = {name}' for i, name in config.id2label.items())}"
                  f"{' (the regression outputs)' if spec.kind == 'regression' else ''}.")
    return f"It is {what}.{labels}"


def _task_usage(spec: TaskSpec, model_id: str, remote_code: bool = False) -> list[str]:
    """The export card's usage snippet: a pipeline, or (multiple choice, which has none) the model itself; a
    custom-code export (`remote_code`) is loaded with `trust_remote_code=True`."""
    repo = json.dumps(model_id)
    trust = ", trust_remote_code=True" if remote_code else ""
    level = get_kind(spec.kind).level
    if level == "token":
        return [
            "from transformers import pipeline",
            "",
            f"tagger = pipeline(\"token-classification\", model={repo}, aggregation_strategy=\"simple\")",
            f"print(tagger({json.dumps(' '.join(_EXAMPLE_WORDS[:-1]) + _EXAMPLE_WORDS[-1])}))  # entities grouped by type",
        ]
    if level == "choice":
        choices = _choices_example(int(spec.num_labels or 2))
        return [
            "import torch",
            "from transformers import AutoModelForMultipleChoice, AutoTokenizer",
            "",
            f"tokenizer = AutoTokenizer.from_pretrained({repo})",
            f"model = AutoModelForMultipleChoice.from_pretrained({repo}{trust}).eval()",
            f"context, choices = {json.dumps(_EXAMPLE_CONTEXT)}, {json.dumps(choices)}",
            "inputs = tokenizer([context] * len(choices), choices, padding=True, return_tensors=\"pt\")",
            "with torch.no_grad():",
            "    scores = model(**{key: value.unsqueeze(0) for key, value in inputs.items()}).logits[0]",
            "print(choices[scores.argmax().item()])",
        ]
    example = json.dumps(_EXAMPLE_SENTENCE) if len(spec.text_columns) == 1 else (
        "{" + f'"text": {json.dumps(_EXAMPLE_PAIR[0])}, "text_pair": {json.dumps(_EXAMPLE_PAIR[1])}' + "}")
    options = ", top_k=None" if spec.kind == "multi_label" else ""
    comment = "  # every label's probability; those > 0.5 apply" if spec.kind == "multi_label" else ""
    return [
        "from transformers import pipeline",
        "",
        f"classifier = pipeline(\"text-classification\", model={repo}{trust}{options})",
        f"print(classifier({example})){comment}",
    ]


def render_task_card(spec: TaskSpec, config: Any, source: MultiTaskConfig, eval_metrics: Mapping[str, float],
                     model_id: str, note: str | None = None) -> str:
    """The model card of a single-task export; `note`: where it was exported from, when not the final model."""
    from huggingface_hub import ModelCardData

    base_model = base_model_id(source.encoder)
    level = get_kind(spec.kind).level
    remote_code = bool(getattr(config, "auto_map", None))
    metadata = ModelCardData(
        base_model=base_model,
        datasets=_hub_datasets([spec]),
        library_name="transformers",
        pipeline_tag=_PIPELINE_TAGS[level],
        tags=["hf_mtl", spec.name, spec.kind, *(["custom_code"] if remote_code else [])],
    )
    task_metrics = {k: v for k, v in eval_metrics.items() if k not in ("eval_glue_score", "eval_score")}
    pooling = "" if level == "token" else f", `{source.task_pooling(spec)}` pooling"
    if remote_code:
        module = config.auto_map["AutoConfig"].split(".")[0]
        model_as = (f"as a custom-code `{config.architectures[0]}` (its code, `{module}.py`, is in this folder and needs "
                    f"only torch and transformers; no standard transformers class reads the encoder with "
                    f"`{source.task_pooling(spec)}` pooling, so loading it needs `trust_remote_code=True`)")
    else:
        model_as = f"as a standard `{config.architectures[0]}`"
    return "\n".join([
        "---", metadata.to_yaml(), "---", "",
        f"# {model_id.rstrip('/').split('/')[-1]}", "",
        (f"Task `{spec.name}` ({spec.kind}{pooling}; data: {_source_cell(spec)}) exported from an hf_mtl multi-task "
         f"model {model_as}: the shared encoder plus this task's head, with the same "
         f"logits. {_export_description(spec, config)}"), "",
        *([note, ""] if note else []),
        "Weighting used in multi-task training: " + _weighting_lines(source.weighting)[0], "",
        "## Evaluation (dev set, measured on the multi-task model)", "",
        *_metrics_table([spec], task_metrics), "",
        "## Usage", "",
        "```python",
        *_task_usage(spec, model_id, remote_code),
        "```", "",
    ])
