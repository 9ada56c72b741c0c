"""Every ```python block of README.md runs as printed: offline (HF_HUB_OFFLINE=1, set by conftest), in a
fresh namespace, from a scratch folder laid out like a fresh clone, `CLONE/` as the working directory
with the GLUE data at `CLONE/../shared/data/glue` (a link to the `glue_dir` fixture). So the blocks'
relative paths (`../shared/data/glue`, `out/...`) work unchanged, and what they write lands in the
scratch folder, never in the repository.

A block that trains runs with smaller numbers by default (`FAST`: the printed string and what replaces
it, each of which must be found in the block, so a changed README cannot silently make the test slow);
`test_training_blocks_run_exactly_as_printed` (marked slow) runs them unchanged. Shell blocks are not
run here.
"""

from __future__ import annotations

import contextlib
import io
import math
import re

import pytest
from conftest import REPO

README = REPO / "README.md"
BLOCKS = [(README.read_text(encoding="utf-8")[:match.start()].count("\n") + 2, match.group(1)) for match in
          re.finditer(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.DOTALL | re.MULTILINE)]

#: In blocks that train: the printed numbers and the smaller ones the default test uses instead.
FAST = (("max_train_samples=500", "max_train_samples=24"), ("max_eval_samples=200", "max_eval_samples=16"),
        ("max_steps=20", "max_steps=1"))


def trains(code: str) -> bool:
    return ".train()" in code


def run_block(code: str, tmp_path, glue_dir, monkeypatch) -> str:
    """Execute `code` as a script from a fresh clone's root (see the module docstring); returns its stdout."""
    clone = tmp_path / "clone"
    clone.mkdir()
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "glue").symlink_to(glue_dir, target_is_directory=True)
    monkeypatch.chdir(clone)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), {"__name__": "__main__"})  # noqa: S102 - the README is the code under test
    return printed.getvalue()


def test_the_readme_has_the_python_blocks_this_file_expects():
    assert len(BLOCKS) >= 2, "the README's Python API and custom-loss snippets are gone: update tests/test_readme.py"
    assert any(trains(code) for _, code in BLOCKS)


@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"README.md:{line}" for line, _ in BLOCKS])
def test_python_block_runs_offline_from_a_fresh_clone(line, code, tmp_path, glue_dir, monkeypatch):
    if trains(code):
        for printed, fast in FAST:
            assert printed in code, f"README.md:{line}: {printed!r} not found; update FAST in tests/test_readme.py"
            code = code.replace(printed, fast)
    output = run_block(code, tmp_path, glue_dir, monkeypatch)
    if trains(code):
        assert math.isfinite(float(output.strip().splitlines()[-1])), output  # the printed eval_glue_score
        assert (tmp_path / "clone" / "out").is_dir()  # its output_dir, relative to the clone


@pytest.mark.slow
@pytest.mark.parametrize("line, code", [(line, code) for line, code in BLOCKS if trains(code)],
                         ids=[f"README.md:{line}" for line, code in BLOCKS if trains(code)])
def test_training_blocks_run_exactly_as_printed(line, code, tmp_path, glue_dir, monkeypatch):
    output = run_block(code, tmp_path, glue_dir, monkeypatch)
    assert -1.0 <= float(output.strip().splitlines()[-1]) <= 1.0, output  # the printed eval_glue_score
