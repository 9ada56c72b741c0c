"""From a trained run to shared models: model card, per-task export, evaluation and prediction of saved runs.

* `write_model_card(...)` writes the README.md of a multi-task repository: base model, tasks and
  datasets, the weighting strategy (formula and hyperparameters), dev metrics and GLUE score,
  training hyperparameters, the training curves (`hf_mtl.plotting`) and a usage snippet.
  `MultiTaskTrainer.create_model_card` (hence `trainer.push_to_hub()` and `hf-mtl train --push_to_hub`)
  calls it; `write_run_model_card(RUN_DIR)` does the same from a saved run's files.
* `export_task(model, task)` turns one task of a `MultiTaskModel` into a standard
  `AutoModelForSequenceClassification` with identical logits; `save_task_model` writes it (with the
  tokenizer and its own model card) to a folder and optionally pushes it (`hf-mtl export`).
* `evaluate_run` / `predict_file` (`hf-mtl evaluate` / `hf-mtl predict`) run a saved model (a local
  run folder or a Hub id) through `MultiTaskTrainer`, on data read by `hf_mtl.data`.

Which encoders export exactly. Every head of a `MultiTaskModel` is dropout and a linear layer on the
encoder's pooled output. An encoder exports when its `*ForSequenceClassification` class has exactly
that shape: the same base model class (with its pooler), a `dropout` and a `classifier` linear layer
of shape (num_labels, hidden_size) applied to the pooler output. That holds for BERT and the models
that load as `BertModel` (bert-base/large, all-MiniLM-L6-v2, TinyBERT, ...), and by the same rule for
ALBERT, ERNIE, FNet, LayoutLM, MegatronBERT, MobileBERT and RoCBert (each checked on a tiny random
model). RoBERTa / XLM-RoBERTa / CamemBERT / Data2VecText / X-MOD, BigBird and MPNet (a two-layer
classification head on the first token), and DistilBERT, ELECTRA, DeBERTa, ConvBERT, Nyströmformer
(no pooler: the multi-task head reads the first token's hidden state) are refused. `export_task`
checks the rule, then runs both models on a probe batch and refuses to return a model whose logits
differ.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from .modeling import (
    DEFAULT_MODEL,
    PACKAGED_MODELS,
    MultiTaskConfig,
    MultiTaskModel,
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
_EXPORTABLE = ("Exportable families: BERT (and BertModel checkpoints such as all-MiniLM-L6-v2), ALBERT, ERNIE, FNet, "
               "LayoutLM, MegatronBERT, MobileBERT, RoCBert.")


# --------------------------------------------------------------------------------------------------
# Loading a saved run
# --------------------------------------------------------------------------------------------------


def load_run(run: str | os.PathLike[str]) -> tuple[MultiTaskModel, Any]:
    """The multi-task model and tokenizer saved in `run`: a training output folder or a Hub repository id."""
    from transformers import AutoConfig, AutoTokenizer

    path = resolve_model_path(str(run))
    config = AutoConfig.from_pretrained(path)
    if config.model_type != MultiTaskConfig.model_type:
        raise ValueError(
            f"{run} holds a {config.model_type!r} model, not an hf_mtl multi-task model. Pass the output_dir of "
            "`hf-mtl train` (or a Hub repository it pushed to); a plain encoder has no task heads to use."
        )
    return MultiTaskModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def _task_spec(config: MultiTaskConfig, task: str) -> TaskSpec:
    specs = {spec.name: spec for spec in config.task_specs}
    if task not in specs:
        raise ValueError(f"--task {task!r} is not a task of this model; its tasks are {list(specs)}.")
    return specs[task]


def _select_tasks(config: MultiTaskConfig, tasks: str | Sequence[str] | None) -> list[TaskSpec]:
    if tasks is None:
        return config.task_specs
    names = [t.strip() for t in tasks.split(",") if t.strip()] if isinstance(tasks, str) else list(tasks)
    return [_task_spec(config, name) for name in names]


# --------------------------------------------------------------------------------------------------
# Per-task export
# --------------------------------------------------------------------------------------------------


def export_task(model: MultiTaskModel, task: str) -> PreTrainedModel:
    """One task of `model` as a standard `AutoModelForSequenceClassification` with the same logits.

    The export is the encoder plus that task's head, `id2label` / `label2id` from the task's label
    names, `problem_type="regression"` for a regression task (its one label is the task name), and
    `classifier_dropout` set to the head's dropout. Encoders whose classification head has another
    shape are refused (see the module docstring).
    """
    from transformers import AutoModelForSequenceClassification

    spec = _task_spec(model.config, task)
    encoder = model.encoder
    family = encoder.config.model_type
    refusal = (
        f"export_task: cannot export task {task!r} of a {family!r} encoder exactly. A multi-task head is dropout + "
        "a linear `classifier` on the encoder's pooler output (the BertForSequenceClassification head); "
    )
    if getattr(encoder, "pooler", None) is None:
        raise ValueError(
            refusal + f"this {type(encoder).__name__} has no pooler, so its heads read the first token's hidden "
            "state, which no standard sequence-classification head does. " + _EXPORTABLE
        )
    config = type(encoder.config).from_dict(encoder.config.to_dict())
    head = model.heads[task]
    if spec.kind == "regression":
        config.num_labels, config.problem_type = 1, "regression"
        config.id2label, config.label2id = {0: spec.name}, {spec.name: 0}
    else:
        names = list(spec.label_names or (f"LABEL_{i}" for i in range(spec.num_labels)))
        config.num_labels, config.problem_type = spec.num_labels, "single_label_classification"
        config.id2label = dict(enumerate(names))
        config.label2id = {name: i for i, name in enumerate(names)}
    config.classifier_dropout = head.dropout.p
    try:
        exported = AutoModelForSequenceClassification.from_config(config)
    except ValueError as error:
        raise ValueError(refusal + f"transformers has no sequence-classification model for it ({error}).") from error
    base = getattr(exported, exported.base_model_prefix, None)
    children = dict(exported.named_children())
    classifier = children.get("classifier")
    if (
        type(base) is not type(encoder)
        or set(children) != {exported.base_model_prefix, "dropout", "classifier"}
        or not isinstance(classifier, nn.Linear)
        or classifier.weight.shape != head.classifier.weight.shape
        or getattr(base, "pooler", None) is None
    ):
        shape = ", ".join(f"{name}: {type(module).__name__}" for name, module in children.items())
        raise ValueError(
            refusal + f"{type(exported).__name__} is ({shape}), another head shape. " + _EXPORTABLE
        )
    parameter = next(model.parameters())
    exported.to(device=parameter.device, dtype=parameter.dtype)
    base.load_state_dict(encoder.state_dict())
    classifier.load_state_dict(head.classifier.state_dict())
    _check_same_logits(model, exported, task)
    return exported


@torch.no_grad()
def _check_same_logits(model: MultiTaskModel, exported: Any, task: str) -> None:
    """Run both models (eval mode) on a fixed probe batch; refuse an export whose logits differ."""
    vocab = model.encoder.config.vocab_size
    input_ids = (torch.arange(2 * 12).reshape(2, 12) * 7919 % (vocab - 1) + 1).to(next(model.parameters()).device)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 8:] = 0
    modes = model.training, exported.training
    model.eval()
    exported.eval()
    try:
        expected = model(input_ids=input_ids, attention_mask=attention_mask, task=task).logits
        actual = exported(input_ids=input_ids, attention_mask=attention_mask).logits
    finally:
        model.train(modes[0])
        exported.train(modes[1])
    if not torch.allclose(actual, expected, rtol=1e-4, atol=1e-5):
        raise ValueError(
            f"export_task: the exported {type(exported).__name__} gives logits that differ from the multi-task "
            f"model's for task {task!r} by up to {(actual - expected).abs().max().item():.3g}; this encoder "
            "family does not map exactly onto a standard sequence-classification head."
        )


def save_task_model(
    run: str | os.PathLike[str] | MultiTaskModel,
    task: str,
    output_dir: str | os.PathLike[str],
    tokenizer: Any = None,
    push_to_hub: bool = False,
    hub_model_id: str | None = None,
    hub_token: str | None = None,
    private: bool | None = None,
) -> Path:
    """Write task `task` of a run (a run folder, a Hub id or a `MultiTaskModel`) as a standard
    sequence-classification model folder: weights, config, tokenizer and a model card.

    With `push_to_hub`, the folder is uploaded to `hub_model_id` (default: the folder's name under
    your namespace) in one commit.
    """
    eval_metrics: dict[str, float] = {}
    if isinstance(run, MultiTaskModel):
        model = run
        if tokenizer is None:
            raise ValueError("save_task_model: pass the tokenizer along with a MultiTaskModel (it is saved in the export).")
    else:
        model, loaded_tokenizer = load_run(run)
        tokenizer = tokenizer or loaded_tokenizer
        if Path(run).is_dir():
            eval_metrics = _run_eval_metrics(Path(run))
    exported = export_task(model, task)
    output = Path(output_dir)
    exported.save_pretrained(output)
    tokenizer.save_pretrained(output)
    spec = _task_spec(model.config, task)
    model_id = hub_model_id or (output.resolve().name if push_to_hub else str(output))
    card = _render_task_card(spec, exported.config, model.config, eval_metrics, model_id)
    (output / MODEL_CARD).write_text(card, encoding="utf-8")
    if push_to_hub:
        upload_folder(output, model_id, token=hub_token, private=private, commit_message=f"Export task {task} from hf_mtl")
    return output


def upload_folder(folder: str | os.PathLike[str], repo_id: str, token: str | None = None, private: bool | None = None,
                  commit_message: str = "Upload with hf_mtl", ignore_patterns: Sequence[str] = ()) -> str:
    """Create `repo_id` (if needed) and upload `folder` in one commit; returns the repository id."""
    from huggingface_hub import HfApi

    api = HfApi()
    repo = api.create_repo(repo_id, token=token, private=private, exist_ok=True)
    api.upload_folder(repo_id=repo.repo_id, folder_path=str(folder), commit_message=commit_message, token=token,
                      ignore_patterns=list(ignore_patterns) or None)
    logger.info("Uploaded %s to %s", folder, repo.repo_id)
    return repo.repo_id


# --------------------------------------------------------------------------------------------------
# Model card
# --------------------------------------------------------------------------------------------------


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


def _run_eval_metrics(run: Path) -> dict[str, float]:
    from .plotting import load_log_history

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
        return ["No evaluation results were recorded for this run (train with `--do_eval`, or run "
                "`hf-mtl evaluate`)."]
    header = [*columns, "loss"]
    lines = ["| task (split) | " + " | ".join("eval loss" if c == "loss" else c for c in header) + " |",
             "|---|" + "---:|" * len(header)]
    for label, row in rows:
        lines.append(f"| {label} | " + " | ".join(_fmt(row[c]) if c in row else "" for c in header) + " |")
    if "eval_glue_score" in eval_metrics:
        lines += ["", f"**GLUE score** (macro average over tasks; a task with two metrics counts their mean): "
                      f"**{_fmt(eval_metrics['eval_glue_score'])}**"]
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
    return [f"`--weighting {name}`: {description}.", "", f"Hyperparameters: {settings}. The effective weight of "
            "task i is dF/dL_i, logged as `weight_<task>` (see the curves below)."]


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
        "A multi-task model trained with hf_mtl: one shared "
        f"{encoder.model_type.upper()} encoder (fine-tuned from "
        f"{f'[{base_model}](https://huggingface.co/{base_model})' if base_model else 'a local encoder'}, "
        f"{encoder.num_hidden_layers} layers, hidden size {encoder.hidden_size}) and one classification or "
        "regression head per task (dropout + linear layer on the pooled output, as in "
        "`BertForSequenceClassification`).", "",
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
        "Needs the `hf_mtl` package (it defines the `hf_mtl` model type). `forward(..., task=NAME)` runs one "
        "task's head:", "",
        *_usage_snippet(model_id, specs), "",
        "One task as a standard `AutoModelForSequenceClassification` (works with `pipeline`, no hf_mtl "
        "needed to load it): `hf-mtl export RUN_DIR --task NAME --output DIR`.", "",
    ]
    return "\n".join(lines)


def _render_task_card(spec: TaskSpec, config: Any, source: MultiTaskConfig, eval_metrics: Mapping[str, float],
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
        f"Task `{spec.name}` ({spec.kind}; dataset {_dataset_cell(spec)}) exported from an hf_mtl multi-task model "
        f"as a standard `{config.architectures[0]}`: the shared encoder plus this task's head, with the same logits. "
        f"Labels: {', '.join(f'{i} = {name}' for i, name in config.id2label.items())}"
        f"{' (the regression output)' if spec.kind == 'regression' else ''}.", "",
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


# --------------------------------------------------------------------------------------------------
# Evaluation and prediction of a saved model
# --------------------------------------------------------------------------------------------------


def _inference_trainer(model: MultiTaskModel, tokenizer: Any, tasks: Sequence[TaskSpec], output_dir: str | os.PathLike[str],
                       batch_size: int, eval_dataset: Mapping[str, Any] | None = None) -> Any:
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

    model, tokenizer = load_run(run)
    specs = _select_tasks(model.config, tasks)
    data_args = data_args or DataArguments()
    # build_datasets tokenises every split it loads; one training row is enough, training sets are not used.
    _, eval_sets = build_datasets(specs, tokenizer, dataclasses.replace(data_args, max_train_samples=1))
    if not eval_sets:
        raise ValueError(f"evaluate: no evaluation split found for tasks {[s.name for s in specs]} in the data given "
                         "(--glue_dir / $GLUE_DIR, else the Hub).")
    if output_dir is None:
        output_dir = Path(run) / "evaluate" if Path(run).is_dir() else Path(f"evaluate-{str(run).rstrip('/').split('/')[-1]}")
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
    import datasets

    from .data import _GLUE_LAYOUTS, _prepare_split

    path = Path(path)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = [(line, row) for line, row in enumerate(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE), 1)
                if row]
    if len(rows) < 2:
        raise ValueError(f"--input {path}: expected a header line and at least one row, found {len(rows)} line(s).")
    header = rows.pop(0)[1]
    layout = _GLUE_LAYOUTS.get(spec.name)
    glue_names = {column: source for column, source in layout.columns.items() if isinstance(source, str)} if layout else {}
    wanted = (*spec.text_columns, "label")
    positions: dict[str, int] = {}
    for column in wanted:
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
    ragged = next(((line, row) for line, row in rows if len(row) != len(header)), None)
    if ragged is not None:
        raise ValueError(f"--input {path}, line {ragged[0]}: {len(ragged[1])} tab-separated fields, the header has "
                         f"{len(header)}. Fewer means a missing field, more a tab inside a text; fix the line.")
    columns = {column: [row[i] for _, row in rows] for column, i in positions.items()}
    if "label" not in columns:
        columns["label"] = ["0"] * len(rows)
    raw = datasets.Dataset.from_dict(columns, features=datasets.Features(dict.fromkeys(columns, datasets.Value("string"))))
    lines = [line for line, _ in rows]
    prepared = _prepare_split(spec, raw.rename_column("label", spec.label_column) if spec.label_column != "label" else raw,
                              where=str(path), locate=lambda row: f"{path}, line {lines[row]}")
    index = [row[header.index("index")] for _, row in rows] if "index" in header else [str(i) for i in range(len(rows))]
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
    """
    import datasets

    from .data import tokenize_splits

    model, tokenizer = load_run(run)
    spec = _task_spec(model.config, task)
    prepared, index = read_task_inputs(spec, input_path)
    tokenized = tokenize_splits(datasets.DatasetDict({"test": prepared}), spec, tokenizer, max_seq_length)["test"]
    output = Path(output_path)
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
