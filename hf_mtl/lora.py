"""LoRA on the shared encoder, through `peft`: the settings, their checks, and the encoder with or without them.

`hf-mtl train --peft lora` freezes the encoder's pretrained weights and trains low-rank updates
W + (alpha / r) · B A of its `--lora_target_modules` (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large
Language Models", arXiv:2106.09685), while every task head stays fully trained. The default targets are
the attention `query` and `value` projections, the paper's choice for a fixed budget of trainable
parameters (its section 7.1): the smallest set, which also keeps the K × P task-gradient matrix of the
gradient-level strategies smallest. `all-linear` (peft's keyword) adapts every linear layer instead.
When a sentence-level head reads BERT's pooler (`--pooling pooler`), the pooler is trained in full
(`modules_to_save`), as the heads are: it is part of what the exported `*ForSequenceClassification` puts
under its classifier, and the MiniLM pooler was never trained.

The LoRA-wrapped encoder is a `peft.PeftModel` inside `MultiTaskModel.encoder`; the settings live in
`MultiTaskConfig.peft`, so a saved run rebuilds the same wrapping when it is loaded. `merged_encoder`
gives back a plain encoder with the adapter merged into its weights (for `hf-mtl export`). `peft` is an
optional dependency (`pip install 'hf_mtl[peft]'`), imported only when LoRA is asked for.
"""

from __future__ import annotations

import copy
import importlib.util
import numbers
from collections.abc import Sequence
from typing import Any

from torch import nn

#: The values of `--peft`.
PEFT_METHODS = ("lora",)
#: `--lora_target_modules` unless given: the attention query and value projections (see the module docstring).
DEFAULT_TARGET_MODULES = ("query", "value")
DEFAULT_R = 8
DEFAULT_ALPHA = 16.0
DEFAULT_DROPOUT = 0.1
#: Where `MultiTaskModel.save_pretrained` writes the encoder's adapter in peft's own format.
ADAPTER_FOLDER = "encoder_adapter"


_NO_PEFT = ("--peft lora needs the peft library, which is not installed: pip install 'hf_mtl[peft]' (or pip install "
            "peft), or train without --peft.")


def check_peft_installed() -> None:
    """A clear error, before anything is loaded, when `peft` is not installed (without importing it)."""
    if importlib.util.find_spec("peft") is None:
        raise ValueError(_NO_PEFT)


def require_peft() -> Any:
    """The `peft` module, or a clear error saying how to install it."""
    try:
        import peft
    except ImportError:
        raise ValueError(_NO_PEFT) from None
    return peft


def lora_settings(r: Any = None, alpha: Any = None, dropout: Any = None,
                  target_modules: str | Sequence[str] | None = None, modules_to_save: Sequence[str] = ()) -> dict[str, Any]:
    """The checked LoRA settings as the `peft.LoraConfig` arguments stored in `MultiTaskConfig.peft` (None: the
    default); a ValueError naming the flag, the value and the fix for a bad one."""
    r = DEFAULT_R if r is None else r
    alpha = DEFAULT_ALPHA if alpha is None else alpha
    dropout = DEFAULT_DROPOUT if dropout is None else dropout
    if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r < 1:
        raise ValueError(f"--lora_r must be a whole number >= 1 (the rank of each low-rank update; 8 is usual), got {r!r}.")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < alpha < float("inf"):
        raise ValueError(f"--lora_alpha must be a number > 0 (updates are scaled by alpha / r; 16 is usual), got {alpha!r}.")
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
        raise ValueError(f"--lora_dropout must be a probability in [0, 1) (dropout on the LoRA input; 0.1 is usual), "
                         f"got {dropout!r}.")
    if target_modules is None:
        targets: list[str] = list(DEFAULT_TARGET_MODULES)
    elif isinstance(target_modules, str):
        targets = [name.strip() for name in target_modules.split(",") if name.strip()]
    else:
        targets = [str(name).strip() for name in target_modules]
    if not targets or any(not name for name in targets):
        raise ValueError(f"--lora_target_modules must name the encoder's linear layers to adapt, comma-separated "
                         f"(e.g. query,value or all-linear), got {target_modules!r}.")
    return {"r": int(r), "lora_alpha": float(alpha), "lora_dropout": float(dropout),
            "target_modules": "all-linear" if targets == ["all-linear"] else targets,
            "modules_to_save": list(modules_to_save) or None}


def check_peft_entry(entry: Any) -> None:
    """A saved `MultiTaskConfig.peft` entry must be LoRA settings (`lora_settings`'s keys); say why if not."""
    where = "MultiTaskConfig (config.json): peft"
    if not isinstance(entry, dict) or entry.get("method") != "lora":
        raise ValueError(f"{where}={entry!r} must be null or a dict with method 'lora' and the LoRA settings.")
    settings = {key: value for key, value in entry.items() if key not in ("method", "base_model_name_or_path")}
    try:
        lora_settings(settings.get("r"), settings.get("lora_alpha"), settings.get("lora_dropout"),
                      settings.get("target_modules"), settings.get("modules_to_save") or ())
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    unknown = set(settings) - {"r", "lora_alpha", "lora_dropout", "target_modules", "modules_to_save"}
    if unknown:
        raise ValueError(f"{where} has unknown keys {sorted(unknown)}.")


def apply_lora(encoder: nn.Module, entry: dict[str, Any]) -> nn.Module:
    """`encoder` as a `peft.PeftModel` with LoRA as `entry` (a `MultiTaskConfig.peft` dict) says: its own weights
    frozen, the LoRA matrices (and `modules_to_save`) trainable."""
    peft = require_peft()
    settings = {key: value for key, value in entry.items() if key not in ("method", "base_model_name_or_path")}
    config = peft.LoraConfig(**settings, base_model_name_or_path=entry.get("base_model_name_or_path"))
    try:
        return peft.get_peft_model(encoder, config)
    except ValueError as error:
        if "target" not in str(error).lower():
            raise
        linear = sorted({name.rsplit(".", 1)[-1] for name, module in encoder.named_modules()
                         if isinstance(module, nn.Linear)})
        raise ValueError(f"--lora_target_modules {entry.get('target_modules')!r}: {error}. The linear layers of this "
                         f"{type(encoder).__name__} are named {', '.join(linear)} (or pass all-linear).") from None


def mark_trainable(encoder: nn.Module) -> None:
    """Only the adapter trains: its LoRA matrices and `modules_to_save` copies; every other weight of `encoder` is
    frozen. `from_pretrained` loads every weight as trainable, so a reloaded LoRA run needs this again."""
    for name, parameter in encoder.named_parameters():
        parameter.requires_grad_(".lora_" in name or ".modules_to_save." in name)


def is_lora(encoder: nn.Module) -> bool:
    """Whether `encoder` carries a peft adapter (without importing peft when it is not loaded)."""
    return hasattr(encoder, "peft_config") and hasattr(encoder, "merge_and_unload")


def merged_encoder(encoder: nn.Module) -> nn.Module:
    """A plain encoder computing what `encoder` computes: a copy with the adapter merged into its weights when
    it carries one (the original is untouched), else `encoder` itself."""
    if not is_lora(encoder):
        return encoder
    return copy.deepcopy(encoder).merge_and_unload()


def trainable_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable parameters, all parameters) of `model`."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
