"""An encoder read with `cls` or `mean` pooling plus one linear head: the custom-code model of an hf_mtl export.

This file depends on torch and transformers only. `hf-mtl export` (`hf_mtl.export`) copies it, unchanged, into
the export folder of a sentence-level or multiple-choice task whose head reads the encoder with `cls` or `mean`
pooling (no standard transformers class pools that way), and names its classes in the folder's `config.json`
(`auto_map`). The folder then loads without hf_mtl, as Hugging Face custom code:

    AutoModelForSequenceClassification.from_pretrained(FOLDER, trust_remote_code=True)
    pipeline("text-classification", model=FOLDER, trust_remote_code=True)
    AutoModelForMultipleChoice.from_pretrained(FOLDER, trust_remote_code=True)   # a multiple-choice task

hf_mtl's own heads pool with `cls_pool` and `mean_pool` below (`hf_mtl.pooling`), so an export reads the encoder
exactly as the multi-task model did.

* `PooledEncoderConfig`: `encoder` (the encoder's configuration, as a dict with its `model_type`), `pooling`
  (`cls` or `mean`), `classifier_dropout`, and the usual `num_labels`, `id2label` / `label2id`, `problem_type`.
* `PooledEncoderForSequenceClassification`: the encoder (`AutoModel.from_config`), the pooled vector, dropout and a
  linear `classifier`; the loss by `problem_type` as in transformers' `*ForSequenceClassification`.
* `PooledEncoderForMultipleChoice`: inputs of (batch, choices, tokens), each (context, choice) pair pooled, one
  linear score per pair; logits (batch, choices).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import (
    MultipleChoiceModelOutput,
    SequenceClassifierOutput,
)

POOLINGS = ("cls", "mean")


def cls_pool(hidden: torch.Tensor) -> torch.Tensor:
    """The first token's last hidden state (no dense layer, no tanh)."""
    return hidden[:, 0]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The mean of the last hidden states over the real (unpadded) tokens; over all tokens without a mask."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class PooledEncoderConfig(PretrainedConfig):
    """An encoder's configuration (`encoder`, a dict) plus how the head reads it (`pooling`) and its dropout."""

    model_type = "hf_mtl_pooled_encoder"

    def __init__(self, encoder: dict | None = None, pooling: str = "mean", classifier_dropout: float = 0.1,
                 **kwargs) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"PooledEncoderConfig: pooling={pooling!r} must be one of {', '.join(POOLINGS)}.")
        self.encoder = dict(encoder or {})
        self.pooling = pooling
        self.classifier_dropout = classifier_dropout
        super().__init__(**kwargs)

    def encoder_config(self) -> PretrainedConfig:
        if "model_type" not in self.encoder:
            raise ValueError("PooledEncoderConfig: `encoder` must be the encoder's configuration with its "
                             f"`model_type`, got keys {sorted(self.encoder)}.")
        return AutoConfig.for_model(**self.encoder)


class PooledEncoderPreTrainedModel(PreTrainedModel):
    config_class = PooledEncoderConfig
    base_model_prefix = "encoder"

    def __init__(self, config: PooledEncoderConfig, outputs: int) -> None:
        super().__init__(config)
        self.encoder = AutoModel.from_config(config.encoder_config())
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(self.encoder.config.hidden_size, outputs)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if module is getattr(self, "classifier", None):
            std = getattr(self.encoder.config, "initializer_range", 0.02)
            nn.init.normal_(module.weight, std=std)
            nn.init.zeros_(module.bias)

    def _scores(self, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds) -> torch.Tensor:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
                  "position_ids": position_ids, "inputs_embeds": inputs_embeds}
        hidden = self.encoder(**{k: v for k, v in inputs.items() if v is not None}, return_dict=True).last_hidden_state
        pooled = cls_pool(hidden) if self.config.pooling == "cls" else mean_pool(hidden, attention_mask)
        return self.classifier(self.dropout(pooled))


class PooledEncoderForSequenceClassification(PooledEncoderPreTrainedModel):
    """Encoder, `cls` / `mean` pooling, dropout, linear classifier: logits (batch, num_labels)."""

    def __init__(self, config: PooledEncoderConfig) -> None:
        super().__init__(config, config.num_labels)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, return_dict=None) -> SequenceClassifierOutput:
        logits = self._scores(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)
        loss = None
        if labels is not None:
            problem = self.config.problem_type or (
                "regression" if self.config.num_labels == 1
                else "single_label_classification" if labels.dtype in (torch.long, torch.int) else
                "multi_label_classification")
            if problem == "regression" and self.config.num_labels == 1:
                loss = nn.functional.mse_loss(logits.squeeze(-1), labels.squeeze(-1).to(logits.dtype))
            elif problem == "regression":
                loss = nn.functional.mse_loss(logits, labels.to(logits.dtype))
            elif problem == "single_label_classification":
                loss = nn.functional.cross_entropy(logits.view(-1, self.config.num_labels), labels.view(-1))
            else:
                loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return SequenceClassifierOutput(loss=loss, logits=logits)


class PooledEncoderForMultipleChoice(PooledEncoderPreTrainedModel):
    """Inputs (batch, choices, tokens); each pair pooled and scored by one linear layer: logits (batch, choices)."""

    def __init__(self, config: PooledEncoderConfig) -> None:
        super().__init__(config, 1)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, return_dict=None) -> MultipleChoiceModelOutput:
        first = input_ids if input_ids is not None else inputs_embeds
        choices = first.shape[1]

        def flat(value):
            return None if value is None else value.reshape(-1, *value.shape[2:])

        scores = self._scores(flat(input_ids), flat(attention_mask), flat(token_type_ids), flat(position_ids),
                              flat(inputs_embeds))
        logits = scores.reshape(-1, choices)
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels.view(-1))
        return MultipleChoiceModelOutput(loss=loss, logits=logits)


# `save_pretrained` copies this file next to the weights and names these classes in config.json's `auto_map`.
PooledEncoderConfig.register_for_auto_class()
PooledEncoderForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
PooledEncoderForMultipleChoice.register_for_auto_class("AutoModelForMultipleChoice")
