"""`hf-mtl bench SUITE [flags]`: the benchmark suites.

* `speed` (`hf_mtl.bench.speed`): every weighting strategy's optimizer step (time and peak memory)
  against `equal`, and one task against a plain Trainer step.
* `torchjd` (`hf_mtl.bench.torchjd`): our gradient aggregators' step against torchjd's own path.
* `lora` (`hf_mtl.bench.lora`): LoRA on the shared encoder against full fine-tuning, step time and peak
  memory for a few strategies.
* `quality` (`hf_mtl.bench.quality`): a grid of strategies × seeds trained and evaluated on your tasks.
* `serve` (`hf_mtl.bench.serve`): one pass of `pipeline("multi-task")` for K heads against K exported
  single-task pipelines on the same inputs.

What the speed, torchjd and lora suites share (setup, timing, memory subprocess, report) is in
`hf_mtl.bench.common`. `python -m hf_mtl.bench SUITE [flags]` works as `hf-mtl bench SUITE [flags]`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence


def _speed(argv: Sequence[str]) -> int:
    from .speed import main

    return main(argv)


def _torchjd(argv: Sequence[str]) -> int:
    from .torchjd import main

    return main(argv)


def _lora(argv: Sequence[str]) -> int:
    from .lora import main

    return main(argv)


def _quality(argv: Sequence[str]) -> int:
    from .quality import main

    return main(argv)


def _serve(argv: Sequence[str]) -> int:
    from .serve import main

    return main(argv)


#: `hf-mtl bench SUITE`: each suite's entry point takes the flags after the suite's name (modules
#: imported lazily, so one suite's optional dependencies never load for another).
SUITES: dict[str, Callable[[Sequence[str]], int]] = {"speed": _speed, "torchjd": _torchjd, "lora": _lora,
                                                     "quality": _quality, "serve": _serve}


def bench(argv: Sequence[str]) -> int:
    """`hf-mtl bench SUITE [flags]`; the suites are the keys of `SUITES`."""
    argv = list(argv)
    names = ", ".join(SUITES)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: hf-mtl bench SUITE [flags]   (SUITE one of: {names}; hf-mtl bench SUITE --help lists them)")
        return 0 if argv else 2
    if argv[0] not in SUITES:
        print(f"hf-mtl bench: unknown benchmark {argv[0]!r}; the available ones are: {names}", file=sys.stderr)
        return 2
    return SUITES[argv[0]](argv[1:])
