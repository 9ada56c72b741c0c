"""The package's import graph: no cycles, and data flows one way (face -> library -> trainer -> engine -> strategies).

Every `import` and `from ... import` of every module under `hf_mtl/` is read with `ast`, the ones inside
functions too (a function-local import hides a cycle from Python but not from a reader), except those
under `if TYPE_CHECKING:`. `docs/architecture.md` draws the same layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hf_mtl"

#: Each module's layer; a module imports only modules of its own layer or below. Names are relative to
#: `hf_mtl`; a subpackage's modules share the subpackage's layer unless listed on their own.
LAYERS: dict[str, int] = {
    # Plain concepts: what a task is and its kinds, label statistics, metrics, pooling, the strategies,
    # collectives, plots, strict YAML/JSON reading.
    "tasks": 0, "kinds": 0, "label_stats": 0, "metrics": 0, "pooling": 0, "plotting": 0, "distributed": 0,
    "weighting": 0, "config_file": 0, "lora": 0, "pooled_encoder": 0,
    # Data sources, task files, data, model and the step engine.
    "sources": 1, "task_file": 1, "data": 1, "sampling": 1, "modeling": 1, "engine": 1,
    # The trainer with its arguments, checkpoint state and callbacks; the model card it writes.
    "training_args": 2, "checkpoint": 2, "callbacks": 2, "task_best": 2, "trainer": 2, "model_card": 2,
    # Library entry points: a whole training run, the Hub, export and inference on a trained run.
    "arguments": 3, "pipeline": 3, "hub": 3, "export": 3, "inference": 3, "multi_task_pipeline": 3,
    # Benchmarks drive the library like a user.
    "bench": 4,
    # The command line: nothing imports it.
    "cli": 5,
}

#: Modules the strategies may import besides each other (they see losses, gradients and plain label statistics).
STRATEGY_IMPORTS = {"tasks", "label_stats"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_modules(path: Path) -> set[str]:
    """The `hf_mtl` modules that `path` imports (relative to the package, e.g. `weighting.base`)."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package[: len(package) - (child.level - 1)]
                    target = [*base, *(child.module.split(".") if child.module else [])]
                elif child.module and child.module.split(".")[0] == "hf_mtl":
                    target = child.module.split(".")[1:]
                else:
                    target = None
                if target is not None:
                    # `from . import x` / `from .pkg import submodule` name modules too.
                    for alias in child.names:
                        sub = ".".join([*target, alias.name])
                        found.add(sub if (PACKAGE / sub.replace(".", "/")).with_suffix(".py").exists()
                                  or (PACKAGE / sub.replace(".", "/")).is_dir() else ".".join(target))
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split(".")[0] == "hf_mtl":
                        found.add(".".join(alias.name.split(".")[1:]))
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    found.discard("")
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    return {module_name(path): imported_modules(path) for path in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return LAYERS[key]
    raise KeyError(module)


def test_every_module_has_a_layer():
    unknown = [m for m in import_graph() if m and _layer_or_none(m) is None]
    assert not unknown, f"modules without a layer in LAYERS (add them, and to docs/architecture.md): {unknown}"


def _layer_or_none(module: str) -> int | None:
    try:
        return layer(module)
    except KeyError:
        return None


def test_no_import_cycles():
    graph = import_graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target] if target in path else [node, target])
            elif target not in state:
                walk(target, [*path, target])
        state[node] = 2

    for start in graph:
        if start not in state:
            walk(start, [start])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_imports_flow_one_way():
    wrong = [f"{source} (layer {layer(source)}) imports {target} (layer {layer(target)})"
             for source, targets in import_graph().items() if _layer_or_none(source) is not None
             for target in targets if _layer_or_none(target) is not None and layer(target) > layer(source)]
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_nothing_imports_the_command_line():
    importers = [source for source, targets in import_graph().items() if "cli" in targets and source != "cli"]
    assert not importers, f"{importers} import hf_mtl.cli; move what they need into a library module"


def test_strategies_import_no_data_model_trainer_or_engine_code():
    wrong = [f"{source} imports {target}" for source, targets in import_graph().items()
             if source.startswith("weighting") for target in targets
             if not target.startswith("weighting") and target not in STRATEGY_IMPORTS]
    assert not wrong, "\n".join(wrong)


def test_the_checks_see_a_cycle_and_a_forbidden_edge(tmp_path, monkeypatch):
    """The parser finds relative, absolute and function-local imports (so the tests above can fail)."""
    fake = tmp_path / "hf_mtl"
    (fake / "weighting").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "cli.py").write_text("")
    (fake / "data.py").write_text("def f():\n    from .weighting import base\n")
    (fake / "weighting" / "__init__.py").write_text("")
    (fake / "weighting" / "base.py").write_text("from ..data import x\nimport hf_mtl.cli\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", fake)
    graph = import_graph()
    assert graph["weighting.base"] == {"data", "cli"}
    assert graph["data"] == {"weighting.base"}
    with pytest.raises(AssertionError, match="import cycles"):
        test_no_import_cycles()
    with pytest.raises(AssertionError, match="weighting.base imports data"):
        test_strategies_import_no_data_model_trainer_or_engine_code()
    with pytest.raises(AssertionError, match="import hf_mtl.cli"):
        test_nothing_imports_the_command_line()
