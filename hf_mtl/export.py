"""Per-task export: one task of a multi-task model as a standard `transformers` model, or as custom code.

* `export_task(model, task)` builds the single-task model of the task's kind (`hf_mtl.kinds`,
  `TaskKind.export_class`): the encoder plus that task's head, its config from the kind
  (`TaskKind.export_config`: `num_labels`, `problem_type`, `id2label` / `label2id` with the real label
  names), and checks that its logits equal the multi-task model's. A sentence-level or multiple-choice task
  with `cls` or `mean` pooling becomes the custom-code model of `hf_mtl.pooled_encoder` instead (below). A LoRA
  run's adapter (`--peft lora`) is merged into the encoder weights first (`hf_mtl.lora.merged_encoder`), so the
  export needs no peft.
* `save_task_model(RUN, task, DIR)` writes it with the tokenizer and its own model card
  (`hf_mtl.model_card.render_task_card`) to a folder, reads the folder back and checks the logits again, and
  optionally pushes it (`hf-mtl export`). It writes into a new or empty folder only, unless `overwrite=True`
  (`--overwrite`), and never into a folder that holds a multi-task model (the run itself, one of its
  checkpoints, another run). `remote_code_note(DIR)` says how to load a custom-code export.

What each kind exports as:

| kind | class | config |
|---|---|---|
| classification | `AutoModelForSequenceClassification` | `single_label_classification`, the class names |
| regression (1 or D outputs) | `AutoModelForSequenceClassification` | `regression`, `num_labels` = D |
| multi_label | `AutoModelForSequenceClassification` | `multi_label_classification` (sigmoid per label) |
| token_classification | `AutoModelForTokenClassification` | the tag names (so `pipeline("token-classification", aggregation_strategy="simple")` groups entities by type) |
| multiple_choice | `AutoModelForMultipleChoice` | one score per choice; inputs are (batch, choices, tokens) |

Which tasks export exactly. Every head of a `MultiTaskModel` is dropout and a linear layer. A
token-classification head reads every token's last hidden state, as every `*ForTokenClassification`
of the shape (base model, `dropout`, `classifier`) does: that holds for BERT, RoBERTa, XLM-RoBERTa,
DistilBERT, ELECTRA, DeBERTa-v2, ALBERT and most encoders, whatever the task's pooling (the
exported base model has no pooler; the encoder's pooler weights are left out). A sentence-level or
multiple-choice head exports as a standard class only with `pooler` pooling: the standard heads read the
encoder's pooler output, and no standard class reproduces `cls` (the first token without the pooler's dense
layer and tanh) or `mean` pooling. Those tasks export, for any encoder, as a Hugging Face custom-code model:
`hf_mtl/pooled_encoder.py` (torch and transformers only; hf_mtl's own pooling uses its functions) is copied
into the folder by `save_pretrained` and named in `config.json`'s `auto_map` (`AutoConfig` and
`AutoModelForSequenceClassification` / `AutoModelForMultipleChoice`), with its own model type, so the folder
loads with `trust_remote_code=True` and without it fails rather than reading a pooler. With `pooler` pooling,
an encoder exports when
its `*ForSequenceClassification` (`*ForMultipleChoice`) class has the same shape: the same base model
class with its pooler, a `dropout` and a `classifier` linear layer on the pooler output. For sequence
classification that holds for BERT and the models that load as `BertModel` (bert-base/large,
all-MiniLM-L6-v2, TinyBERT, ...), and by the same rule for ALBERT, ERNIE, FNet, LayoutLM, MegatronBERT,
MobileBERT and RoCBert (each checked on a tiny random model). RoBERTa / XLM-RoBERTa / CamemBERT /
Data2VecText / X-MOD, BigBird and MPNet (a two-layer classification head on the first token), and
DistilBERT, ELECTRA, DeBERTa, ConvBERT, Nyströmformer (no pooler: the multi-task head reads the first
token's hidden state) are refused. Multiple choice maps BERT, ALBERT, ERNIE, FNet, MegatronBERT,
MobileBERT, RoCBert and also RoBERTa, XLM-RoBERTa, CamemBERT, MPNet and BigBird (their
`*ForMultipleChoice` reads the pooler). Whatever the rule says, `export_task` then runs both models on
a probe batch and refuses to return a model whose logits differ.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from .hub import holds_multitask_model, load_run, task_spec, upload_folder
from .kinds import get_kind
from .lora import merged_encoder
from .model_card import (
    MODEL_CARD,
    best_checkpoint_note,
    eval_metrics_at,
    render_task_card,
    run_eval_metrics,
)
from .modeling import MultiTaskModel
from .pooled_encoder import (
    PooledEncoderConfig,
    PooledEncoderForMultipleChoice,
    PooledEncoderForSequenceClassification,
)

_EXPORTABLE = ("Exportable families: BERT (and BertModel checkpoints such as all-MiniLM-L6-v2), ALBERT, ERNIE, FNet, "
               "LayoutLM, MegatronBERT, MobileBERT, RoCBert.")
#: The other way out of a refused `pooler` export of a sentence-level or multiple-choice task.
_CUSTOM_CODE_HINT = (" A task trained with --pooling cls or mean exports for any encoder, as a custom-code model "
                     "(loaded with trust_remote_code=True).")
_EXPORTABLE_BY_LEVEL = {
    "sequence": _EXPORTABLE + _CUSTOM_CODE_HINT,
    "choice": ("Exportable families for multiple choice: BERT (and BertModel checkpoints such as all-MiniLM-L6-v2), "
               "ALBERT, ERNIE, FNet, MegatronBERT, MobileBERT, RoCBert, RoBERTa, XLM-RoBERTa, CamemBERT, MPNet, "
               "BigBird." + _CUSTOM_CODE_HINT),
    "token": ("Token classification exports for encoders whose *ForTokenClassification is the base model, dropout and "
              "a linear classifier (BERT, RoBERTa, XLM-RoBERTa, DistilBERT, ELECTRA, DeBERTa-v2, ALBERT, ...)."),
}
#: The head the standard class puts on the encoder, by what the task's head reads.
_HEAD_WORDS = {
    "sequence": ("a linear `classifier` on the encoder's pooler output (the BertForSequenceClassification head)"),
    "choice": ("a linear `classifier` giving one score per (context, choice) pair from the encoder's pooler output "
               "(the BertForMultipleChoice head)"),
    "token": "a linear `classifier` on every token's last hidden state (the BertForTokenClassification head)",
}


def export_task(model: MultiTaskModel, task: str) -> PreTrainedModel:
    """One task of `model` as a standard `transformers` model with the same logits.

    The class is the task kind's `export_class` (`AutoModelForSequenceClassification` for classification,
    regression and multi-label tasks, `AutoModelForTokenClassification`, `AutoModelForMultipleChoice`); the
    config gets the kind's `export_config` (`num_labels`, `problem_type`, `id2label` / `label2id` from the
    task's label names) and `classifier_dropout` set to the head's dropout. A sentence-level or multiple-choice
    task trained with `cls` or `mean` pooling is `hf_mtl.pooled_encoder`'s `PooledEncoderForSequenceClassification`
    / `PooledEncoderForMultipleChoice` instead (custom code, any encoder). Refused, with the reason: with
    `pooler` pooling, an encoder whose standard head has another shape (see the module docstring).
    """
    import transformers

    spec = task_spec(model.config, task)
    kind = get_kind(spec.kind)
    encoder = merged_encoder(model.encoder)  # a LoRA adapter merged into the weights: a plain encoder
    family = encoder.config.model_type
    level = kind.level
    exportable = _EXPORTABLE_BY_LEVEL.get(level, _EXPORTABLE)
    pooling = model.config.task_pooling(spec)
    if level != "token" and pooling != "pooler":
        exported = _pooled_export(model, encoder, spec, pooling)
        _check_same_logits(model, exported, task, choices=int(spec.num_labels) if level == "choice" else None)
        return exported
    refusal = (
        f"export_task: cannot export task {task!r} of a {family!r} encoder exactly. A multi-task head is dropout + "
        f"{_HEAD_WORDS[level]}; "
    )
    if level != "token" and getattr(encoder, "pooler", None) is None:
        raise ValueError(
            refusal + f"this {type(encoder).__name__} has no pooler, so its heads read the first token's hidden "
            f"state, which no standard {'multiple-choice' if level == 'choice' else 'sequence-classification'} head "
            "does. " + exportable
        )
    config = type(encoder.config).from_dict(encoder.config.to_dict())
    head = model.heads[task]
    kind.export_config(spec, config)
    config.classifier_dropout = head.dropout.p
    auto_class = getattr(transformers, kind.export_class)
    try:
        exported = auto_class.from_config(config)
    except ValueError as error:
        raise ValueError(refusal + f"transformers has no {kind.export_class} model for it ({error}). "
                         + exportable) from error
    base = getattr(exported, exported.base_model_prefix, None)
    children = dict(exported.named_children())
    classifier = children.get("classifier")
    if (
        type(base) is not type(encoder)
        or set(children) != {exported.base_model_prefix, "dropout", "classifier"}
        or not isinstance(classifier, nn.Linear)
        or classifier.weight.shape != head.classifier.weight.shape
        or (level != "token" and getattr(base, "pooler", None) is None)
    ):
        shape = ", ".join(f"{name}: {type(module).__name__}" for name, module in children.items())
        raise ValueError(refusal + f"{type(exported).__name__} is ({shape}), another head shape. " + exportable)
    parameter = next(model.parameters())
    exported.to(device=parameter.device, dtype=parameter.dtype)
    _load_encoder(base, encoder, without_pooler=level == "token")
    classifier.load_state_dict(head.classifier.state_dict())
    _check_same_logits(model, exported, task, choices=int(spec.num_labels) if level == "choice" else None)
    return exported


def _pooled_export(model: MultiTaskModel, encoder: nn.Module, spec: Any, pooling: str) -> PreTrainedModel:
    """A `cls` / `mean`-pooled sentence-level or multiple-choice task as the custom-code model of
    `hf_mtl.pooled_encoder`: the (plain, LoRA-merged) encoder's configuration and weights, the pooling, the head's
    dropout and linear layer, the kind's `export_config` (labels, `problem_type`)."""
    kind = get_kind(spec.kind)
    head = model.heads[spec.name]
    config = PooledEncoderConfig(encoder=encoder.config.to_dict(), pooling=pooling,
                                 classifier_dropout=head.dropout.p)
    kind.export_config(spec, config)
    model_class = PooledEncoderForMultipleChoice if kind.level == "choice" else PooledEncoderForSequenceClassification
    exported = model_class(config)
    parameter = next(model.parameters())
    exported.to(device=parameter.device, dtype=parameter.dtype)
    exported.encoder.load_state_dict(encoder.state_dict())
    exported.classifier.load_state_dict(head.classifier.state_dict())
    return exported


def remote_code_note(folder: str | os.PathLike[str]) -> str | None:
    """For a custom-code export (its config.json names its own classes in `auto_map`), how to load it: with
    `trust_remote_code=True`; None for a standard export."""
    config = Path(folder) / "config.json"
    auto_map = json.loads(config.read_text(encoding="utf-8")).get("auto_map") if config.is_file() else None
    if not auto_map:
        return None
    auto_class = next(name for name in auto_map if name != "AutoConfig")
    usage = (f'pipeline("text-classification", model="{folder}", trust_remote_code=True)'
             if auto_class == "AutoModelForSequenceClassification" else
             f'{auto_class}.from_pretrained("{folder}", trust_remote_code=True)')
    return ("It is a custom-code model (no standard transformers class reads the encoder with this task's pooling; its "
            f"code is in the folder and needs only torch and transformers): load it with trust_remote_code=True, e.g. "
            f"{usage}.")


def _load_encoder(base: nn.Module, encoder: nn.Module, without_pooler: bool) -> None:
    """The encoder's weights into the exported model's base model; a token-classification base model has no
    pooler (transformers builds it with `add_pooling_layer=False`), so the pooler's weights are left out."""
    state = encoder.state_dict()
    if without_pooler and getattr(base, "pooler", None) is None:
        state = {name: value for name, value in state.items() if not name.startswith("pooler.")}
    base.load_state_dict(state)


@torch.no_grad()
def _check_same_logits(model: MultiTaskModel, exported: Any, task: str, choices: int | None = None) -> None:
    """Run both models (eval mode) on a fixed probe batch (2 rows of 12 tokens, one padded; for multiple choice
    2 rows of `choices` choices of 12 tokens); refuse an export whose logits differ."""
    vocab = model.encoder.config.vocab_size
    rows = 2 * (choices or 1)
    input_ids = (torch.arange(rows * 12).reshape(rows, 12) * 7919 % (vocab - 1) + 1).to(next(model.parameters()).device)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1::2, 8:] = 0
    if choices is not None:
        input_ids, attention_mask = input_ids.reshape(2, choices, 12), attention_mask.reshape(2, choices, 12)
    modes = model.training, exported.training
    model.eval()
    exported.eval()
    try:
        expected = model(input_ids=input_ids, attention_mask=attention_mask, task=task).logits
        actual = exported(input_ids=input_ids, attention_mask=attention_mask).logits
    finally:
        model.train(modes[0])
        exported.train(modes[1])
    if actual.shape != expected.shape:
        difference = f"shape {tuple(actual.shape)} instead of {tuple(expected.shape)}"
    elif not torch.allclose(actual, expected, rtol=1e-4, atol=1e-5):
        difference = f"values that differ by up to {(actual - expected).abs().max().item():.3g}"
    else:
        return
    raise ValueError(
        f"export_task: the exported {type(exported).__name__} gives logits of {difference} from the multi-task "
        f"model's for task {task!r}; this encoder family does not map exactly onto the exported class."
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
    best: bool = False,
) -> Path:
    """Write task `task` of a run (a run folder, a Hub id or a `MultiTaskModel`) as a standard transformers model
    folder of the task kind's class (see `export_task`): weights, config, tokenizer and a model card.

    `output_dir` must be new or empty; with `overwrite=True` the export is written into a non-empty folder
    (its files of the same names are replaced, others are kept). A folder that holds a multi-task model
    (the run being exported, one of its `checkpoint-*` folders, another run) is refused even then: the
    export would replace that model. With `push_to_hub`, the folder is uploaded to `hub_model_id`
    (default: the folder's name under your namespace) in one commit.

    With `best=True` (`--best`) the task is exported from the checkpoint of its best evaluation during training
    (`hf_mtl.task_best`; `run` must be a local run folder that evaluated and saved during training), and the card
    says which step and that choosing it on the dev set makes its dev metrics optimistic.
    """
    source = output_dir if isinstance(run, MultiTaskModel) else run
    check_export_folder(output_dir, overwrite, suggestion=f"{str(source).rstrip('/')}-{task}")  # before loading anything
    eval_metrics: dict[str, float] = {}
    note = None
    if best:
        if isinstance(run, MultiTaskModel):
            raise ValueError("save_task_model: best=True needs the run folder (its checkpoints), not a loaded model.")
        from .task_best import best_checkpoint  # here: it imports the Trainer's callbacks (and so peft)

        folder, record = best_checkpoint(run, task)
        model, loaded_tokenizer = load_run(folder)
        tokenizer = tokenizer or loaded_tokenizer
        from .plotting import load_log_history

        eval_metrics = eval_metrics_at(load_log_history(Path(run)), record["step"])
        note = best_checkpoint_note(task, record)
    elif isinstance(run, MultiTaskModel):
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
    choices = int(spec.num_labels) if get_kind(spec.kind).level == "choice" else None
    parameter = next(model.parameters())
    reloaded = type(exported).from_pretrained(output).to(device=parameter.device, dtype=parameter.dtype)
    _check_same_logits(model, reloaded, task, choices=choices)  # what was written, read back as a user would
    model_id = hub_model_id or (output.resolve().name if push_to_hub else str(output))
    card = render_task_card(spec, exported.config, model.config, eval_metrics, model_id, note=note)
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
