"""Per-task export: one task of a multi-task model as a standard `AutoModelForSequenceClassification`.

* `export_task(model, task)` builds the single-task model (encoder + that task's head, `id2label` /
  `label2id` from the task) and checks that its logits equal the multi-task model's.
* `save_task_model(RUN, task, DIR)` writes it with the tokenizer and its own model card
  (`hf_mtl.model_card.render_task_card`) to a folder, and optionally pushes it (`hf-mtl export`). It
  writes into a new or empty folder only, unless `overwrite=True` (`--overwrite`), and never into a
  folder that holds a multi-task model (the run itself, one of its checkpoints, another run).

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

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from .hub import holds_multitask_model, load_run, task_spec, upload_folder
from .model_card import MODEL_CARD, render_task_card, run_eval_metrics
from .modeling import MultiTaskModel

_EXPORTABLE = ("Exportable families: BERT (and BertModel checkpoints such as all-MiniLM-L6-v2), ALBERT, ERNIE, FNet, "
               "LayoutLM, MegatronBERT, MobileBERT, RoCBert.")


def export_task(model: MultiTaskModel, task: str) -> PreTrainedModel:
    """One task of `model` as a standard `AutoModelForSequenceClassification` with the same logits.

    The export is the encoder plus that task's head, `id2label` / `label2id` from the task's label
    names, `problem_type="regression"` for a regression task (its one label is the task name), and
    `classifier_dropout` set to the head's dropout. Encoders whose classification head has another
    shape are refused (see the module docstring).
    """
    from transformers import AutoModelForSequenceClassification

    spec = task_spec(model.config, task)
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
    overwrite: bool = False,
) -> Path:
    """Write task `task` of a run (a run folder, a Hub id or a `MultiTaskModel`) as a standard
    sequence-classification model folder: weights, config, tokenizer and a model card.

    `output_dir` must be new or empty; with `overwrite=True` the export is written into a non-empty folder
    (its files of the same names are replaced, others are kept). A folder that holds a multi-task model
    (the run being exported, one of its `checkpoint-*` folders, another run) is refused even then: the
    export would replace that model. With `push_to_hub`, the folder is uploaded to `hub_model_id`
    (default: the folder's name under your namespace) in one commit.
    """
    source = output_dir if isinstance(run, MultiTaskModel) else run
    check_export_folder(output_dir, overwrite, suggestion=f"{str(source).rstrip('/')}-{task}")  # before loading anything
    eval_metrics: dict[str, float] = {}
    if isinstance(run, MultiTaskModel):
        model = run
        if tokenizer is None:
            raise ValueError("save_task_model: pass the tokenizer along with a MultiTaskModel (it is saved in the export).")
    else:
        model, loaded_tokenizer = load_run(run)
        tokenizer = tokenizer or loaded_tokenizer
        if Path(run).is_dir():
            eval_metrics = run_eval_metrics(Path(run))
    exported = export_task(model, task)
    output = Path(output_dir)
    exported.save_pretrained(output)
    tokenizer.save_pretrained(output)
    spec = task_spec(model.config, task)
    model_id = hub_model_id or (output.resolve().name if push_to_hub else str(output))
    card = render_task_card(spec, exported.config, model.config, eval_metrics, model_id)
    (output / MODEL_CARD).write_text(card, encoding="utf-8")
    if push_to_hub:
        upload_folder(output, model_id, token=hub_token, private=private, commit_message=f"Export task {task} from hf_mtl")
    return output


def check_export_folder(output_dir: str | os.PathLike[str], overwrite: bool = False, suggestion: str | None = None) -> None:
    """Refuse an export folder that would lose data: a file, a folder holding a multi-task model (always: the
    run's own model files would be replaced), or a non-empty folder without `overwrite`."""
    output = Path(output_dir)
    other = f" Choose a new folder, e.g. --output {suggestion}." if suggestion else " Choose a new folder."
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output} is a file; the export is a folder (config.json, model.safetensors, the "
                         f"tokenizer and README.md).{other}")
    if not output.is_dir():
        return
    if holds_multitask_model(output):
        raise ValueError(
            f"--output {output} holds a multi-task hf_mtl model (a run or one of its checkpoints): the export would "
            "replace its config.json and model.safetensors with a single-task model, so this is refused even with "
            f"--overwrite.{other}"
        )
    entries = sorted(entry.name for entry in output.iterdir())
    if entries and not overwrite:
        shown = ", ".join(entries[:5]) + (f", ... ({len(entries)} entries)" if len(entries) > 5 else "")
        raise ValueError(
            f"--output {output} is not empty ({shown}); the export would replace its config.json, model weights, "
            f"tokenizer files and README.md.{other} Or pass --overwrite (overwrite=True in Python) to write into it; "
            "its other files are kept."
        )
