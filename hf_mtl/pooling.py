"""How a sentence-level head reads the encoder: `pooler`, `cls` or `mean` (`hf_mtl.tasks.POOLINGS`).

* `pooler`: the encoder's pooler output (BERT: tanh(W·h_[CLS] + b)), what `BertForSequenceClassification`
  reads, so such heads export exactly; an encoder without a pooler falls back to the first token.
* `cls`: the first token's last hidden state, without the pooler's dense layer and tanh.
* `mean`: the mean of the last hidden states over the real (unpadded) tokens, as sentence-transformers
  checkpoints such as all-MiniLM-L6-v2 were trained to be read (their BERT pooler was never trained).

`cls` and `mean` are computed by `hf_mtl.pooled_encoder`, the self-contained file an export of such a task ships,
so the exported model pools exactly as the multi-task model does.
"""

from __future__ import annotations

from typing import Any

import torch

from .pooled_encoder import cls_pool, mean_pool


def pool(outputs: Any, attention_mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """One vector per input from an encoder's outputs (`last_hidden_state`, optional `pooler_output`)."""
    hidden = outputs.last_hidden_state
    if pooling == "pooler":
        pooled = getattr(outputs, "pooler_output", None)
        return hidden[:, 0] if pooled is None else pooled
    if pooling == "cls":
        return cls_pool(hidden)
    if pooling == "mean":
        return mean_pool(hidden, attention_mask)
    raise ValueError(f"pooling={pooling!r} is not one of pooler, cls, mean.")
