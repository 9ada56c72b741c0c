"""`pipeline("multi-task", model=RUN)`: every task's prediction from one encoder pass per input.

The point of a shared encoder is that one forward pass feeds every head. `MultiTaskPipeline` is a
`transformers.Pipeline` registered under the task name `multi-task` (when `transformers.pipelines` is imported
after or before `import hf_mtl`; see `hf_mtl/__init__.py`), so

    import hf_mtl
    from transformers import pipeline

    mtl = pipeline("multi-task", model="OUT")        # a run folder or a Hub id of an hf_mtl model
    mtl("A fine film.")                              # {"sst2": {"label": ..., "score": ...}, "stsb": {"value": ...}, ...}
    mtl({"text": "A man plays.", "text_pair": "Someone plays."})
    mtl(["One.", "Two."], batch_size=8, truncation=True)

Each input (a string, or a dict `{"text": ..., "text_pair": ...}` as in `text-classification`) is tokenised
once and encoded once (`MultiTaskModel.forward_heads`); every head reads that encoding. Per task:

* classification: `{"label", "score"}` (softmax), or with `top_k=None` / `top_k=k` the list of every / the k
  best labels, as `text-classification` gives them;
* multi_label: the list of `{"label", "score"}` (sigmoid) of the labels that apply (score > 0.5), or with
  `top_k=None` every label's;
* regression: `{"value": x}` (a list for a vector regression);
* token classification: the tags of the first text's tokens, grouped as `token-classification` groups them
  (`aggregation_strategy`, default `simple`: `{"entity_group", "score", "word", "start", "end"}`; `none`: one
  `{"entity", "score", "index", "word", "start", "end"}` per token; `ignore_labels`, default `["O"]`, left out)
  — transformers' own grouping code;
* multiple-choice tasks are left out: a choice head scores (context, choice) pairs, which one encoding of one
  input cannot give (naming one in `tasks=` is refused).

`tasks=["sst2", "stsb"]` limits the heads run; batching (`batch_size`), `truncation` and `max_length` work as
in the standard text pipelines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import Pipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.token_classification import (
    AggregationStrategy,
    TokenClassificationPipeline,
)

from .kinds import get_kind
from .kinds.base import label_names_or_ids
from .modeling import MultiTaskModel

#: The task name the pipeline is registered under.
TASK_NAME = "multi-task"
#: What preprocess passes to postprocess besides the model inputs.
_KEPT = ("special_tokens_mask", "offset_mapping", "sequence_ids", "text")


class MultiTaskPipeline(Pipeline):
    """Every task's prediction for each input from one encoder pass (see the module docstring)."""

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.model, MultiTaskModel):
            raise ValueError(  # noqa: TRY004 - bad input is a ValueError throughout hf_mtlf"pipeline({TASK_NAME!r}): the model is a {type(self.model).__name__}, not an hf_mtl "
                             "MultiTaskModel; pass the output_dir of `hf-mtl train` or a Hub id of an hf_mtl model.")
        self.specs = {spec.name: spec for spec in self.model.config.task_specs}
        self._groupers: dict[str, _TagGrouper] = {}

    def _sanitize_parameters(self, tasks: str | Sequence[str] | None = None, truncation: Any = None,
                             max_length: int | None = None, top_k: int | None | str = "", aggregation_strategy: Any = None,
                             ignore_labels: Sequence[str] | None = None, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        if kwargs:
            raise ValueError(f"pipeline({TASK_NAME!r}): unknown argument(s) {sorted(kwargs)}; it takes tasks, "
                             "truncation, max_length, top_k, aggregation_strategy, ignore_labels, batch_size.")
        preprocess: dict[str, Any] = {}
        if truncation is not None:
            preprocess["truncation"] = truncation
        if max_length is not None:
            preprocess["max_length"] = max_length
        forward: dict[str, Any] = {}
        postprocess: dict[str, Any] = {}
        if tasks is not None:
            forward["tasks"] = postprocess["tasks"] = self._check_tasks(tasks)
        if top_k != "":
            if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
                raise ValueError(f"pipeline({TASK_NAME!r}): top_k={top_k!r}; pass a whole number >= 1, or None for "
                                 "every label.")
            postprocess["top_k"] = top_k
        if ignore_labels is not None:
            postprocess["ignore_labels"] = list(ignore_labels)
        if aggregation_strategy is not None:
            try:
                postprocess["aggregation_strategy"] = AggregationStrategy(str(getattr(aggregation_strategy, "value",
                                                                                  aggregation_strategy)).lower())
            except ValueError:
                raise ValueError(f"pipeline({TASK_NAME!r}): aggregation_strategy={aggregation_strategy!r}; pass one "
                                 f"of {[s.value for s in AggregationStrategy]}.") from None
        return preprocess, forward, postprocess

    def _check_tasks(self, tasks: str | Sequence[str]) -> list[str]:
        specs = {spec.name: spec for spec in self.model.config.task_specs}  # also called by Pipeline.__init__
        names = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else list(tasks)
        for name in names:
            if name not in specs:
                raise ValueError(f"pipeline({TASK_NAME!r}): tasks={name!r} is not a task of this model; its tasks are "
                                 f"{list(specs)}.")
            if get_kind(specs[name].kind).level == "choice":
                raise ValueError(f"pipeline({TASK_NAME!r}): task {name!r} is multiple choice, which one encoding of "
                                 "one input cannot serve; leave it out of tasks=.")
        return names

    def preprocess(self, inputs: Any, truncation: Any = None, max_length: int | None = None) -> dict[str, Any]:
        if isinstance(inputs, Mapping):
            unknown = sorted(set(inputs) - {"text", "text_pair"})
            if "text" not in inputs or unknown:
                raise ValueError(f"pipeline({TASK_NAME!r}): an input dict takes the keys text and text_pair, got "
                                 f"{sorted(inputs)}.")
            text, pair = inputs["text"], inputs.get("text_pair")
        else:
            text, pair = inputs, None
        if not isinstance(text, str) or not (pair is None or isinstance(pair, str)):
            raise ValueError(f"pipeline({TASK_NAME!r}): an input is a string or {{'text': str, 'text_pair': str}}, "
                             f"got {inputs!r}.")
        fast = self.tokenizer.is_fast
        encoding = self.tokenizer(text, text_pair=pair, return_tensors="pt", truncation=truncation,
                                  max_length=max_length, return_special_tokens_mask=True,
                                  return_offsets_mapping=fast)
        model_inputs = dict(encoding)
        if fast:
            model_inputs["sequence_ids"] = torch.tensor([[-1 if s is None else s for s in encoding.sequence_ids(0)]])
        model_inputs["text"] = text
        return model_inputs

    def _forward(self, model_inputs: dict[str, Any], tasks: Sequence[str] | None = None) -> dict[str, Any]:
        kept = {key: model_inputs.pop(key) for key in _KEPT if key in model_inputs}
        logits = self.model.forward_heads(**model_inputs, tasks=tasks)
        return {**{f"logits:{task}": value for task, value in logits.items()}, **kept,
                "input_ids": model_inputs["input_ids"], "attention_mask": model_inputs["attention_mask"]}

    def postprocess(self, outputs: dict[str, Any], tasks: Sequence[str] | None = None, top_k: int | None = 1,
                    aggregation_strategy: AggregationStrategy = AggregationStrategy.SIMPLE,
                    ignore_labels: Sequence[str] = ("O",)) -> dict[str, Any]:
        names = list(tasks) if tasks is not None else self.model.serving_tasks()
        real = outputs["attention_mask"][0].bool()
        return {name: self._prediction(name, outputs[f"logits:{name}"][0].float(), outputs, real, top_k,
                                       aggregation_strategy, ignore_labels) for name in names}

    def _prediction(self, name: str, logits: torch.Tensor, outputs: dict[str, Any], real: torch.Tensor,
                    top_k: int | None, aggregation_strategy: AggregationStrategy, ignore_labels: Sequence[str]) -> Any:
        spec = self.specs[name]
        if spec.kind == "regression":
            values = logits.tolist()
            return {"value": values[0] if len(values) == 1 else values}
        names = label_names_or_ids(spec) if spec.label_names or spec.kind != "classification" else [
            str(i) for i in range(int(spec.num_labels))]
        if get_kind(spec.kind).level == "token":
            tags = self._tags(name, names, logits, outputs, real, aggregation_strategy)
            return [tag for tag in tags if tag.get("entity", tag.get("entity_group")) not in ignore_labels]
        if spec.kind == "multi_label":
            scores = torch.sigmoid(logits).tolist()
            ranked = sorted(({"label": n, "score": s} for n, s in zip(names, scores)), key=lambda e: -e["score"])
            return ranked if top_k is None else [entry for entry in ranked if entry["score"] > 0.5]
        scores = torch.softmax(logits, dim=-1).tolist()
        ranked = sorted(({"label": n, "score": s} for n, s in zip(names, scores)), key=lambda e: -e["score"])
        return ranked[0] if top_k == 1 else ranked[:top_k]

    def _tags(self, name: str, names: list[str], logits: torch.Tensor, outputs: dict[str, Any], real: torch.Tensor,
              aggregation_strategy: AggregationStrategy) -> list[dict[str, Any]]:
        """The first text's tokens' tags, grouped by transformers' token-classification code."""
        grouper = self._groupers.get(name)
        if grouper is None:
            grouper = self._groupers[name] = _TagGrouper(self.tokenizer, dict(enumerate(names)))
        skip = outputs["special_tokens_mask"][0].bool() | ~real
        if "sequence_ids" in outputs:
            skip |= outputs["sequence_ids"][0] != 0
        offsets = outputs.get("offset_mapping")
        pre_entities = grouper.gather_pre_entities(
            outputs["text"], outputs["input_ids"][0].numpy(), torch.softmax(logits, dim=-1).numpy(),
            None if offsets is None else offsets[0].numpy(), skip.numpy(), aggregation_strategy)
        entities = grouper.aggregate(pre_entities, aggregation_strategy)
        return [{key: float(value) if isinstance(value, np.floating) else value for key, value in entity.items()}
                for entity in entities]


class _TagGrouper(TokenClassificationPipeline):
    """transformers' token-classification grouping (`gather_pre_entities`, `aggregate`) for one head's tags: those
    methods read only the tokenizer and `model.config.id2label`, so no model or pipeline state is set up."""

    def __init__(self, tokenizer: Any, id2label: dict[int, str]) -> None:  # no Pipeline.__init__: nothing else is read
        self.tokenizer = tokenizer
        self.model = _Id2Label(id2label)


class _Id2Label:
    def __init__(self, id2label: dict[int, str]) -> None:
        self.config = self
        self.id2label = id2label


def register_pipeline() -> None:
    """Register `MultiTaskPipeline` as `pipeline("multi-task", ...)`, loading `MultiTaskModel` from a run folder or
    Hub id; done when this module is imported (`hf_mtl/__init__.py` imports it once `transformers.pipelines` is)."""
    if PIPELINE_REGISTRY.supported_tasks.get(TASK_NAME, {}).get("impl") is MultiTaskPipeline:
        return
    PIPELINE_REGISTRY.register_pipeline(TASK_NAME, pipeline_class=MultiTaskPipeline, pt_model=MultiTaskModel)


register_pipeline()
