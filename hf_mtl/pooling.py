"""How a sentence-level head reads the encoder: `pooler`, `cls` or `mean` (`hf_mtl.tasks.POOLINGS`).

* `pooler`: the encoder's pooler output (BERT: tanh(W·h_[CLS] + b)), what `BertForSequenceClassification`
  reads, so such heads export exactly; an encoder without a pooler falls back to the first token.
* `cls`: the first token's last hidden state, without the pooler's dense layer and tanh.
* `mean`: the mean of the last hidden states over the real (unpadded) tokens, as sentence-transformers
  checkpoints such as all-MiniLM-L6-v2 were trained to be read (their BERT pooler was never trained).
"""

from __future__ import annotations

from typing import Any

import torch


def pool(outputs: Any, attention_mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """One vector per input from an encoder's outputs (`last_hidden_state`, optional `pooler_output`)."""
    hidden = outputs.last_hidden_state
    if pooling == "pooler":
        pooled = getattr(outputs, "pooler_output", None)
        return hidden[:, 0] if pooled is None else pooled
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean":
        if attention_mask is None:
            return hidden.mean(dim=1)
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    raise ValueError(f"pooling={pooling!r} is not one of pooler, cls, mean.")
