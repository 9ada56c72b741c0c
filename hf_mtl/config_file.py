"""Strict reading of YAML / JSON files (train configs, task files): every problem names the file and line.

A parse error, a key given twice or a file that is empty, missing, a folder or not UTF-8 is a ValueError
(FileNotFoundError for a missing file) that says where and how to fix it. `read_config_value` returns
whatever the file holds; `read_config` requires a mapping of flag names (a train config).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any


@dataclass
class ConfigFile:
    """A parsed config file: its top-level {key: value} and the line of each key (1-based, None if unknown)."""

    path: str
    values: dict[str, Any]
    lines: dict[str, int | None]

    def where(self, key: str) -> str:
        line = self.lines.get(key)
        return f"config file {self.path}, line {line}" if line else f"config file {self.path}"


def read_config(path: str) -> ConfigFile:
    """Read a YAML/JSON config file strictly: every problem is a ValueError (FileNotFoundError for a missing
    file) naming the file, the line (and column) where known, and the fix."""
    values, lines = _read(path, "config file")
    if values is None:
        raise ValueError(f"config file {path} is empty: write one `flag: value` per line, e.g. `tasks: sst2,mrpc`.")
    if not isinstance(values, dict):  # a ValueError: `hf-mtl` reports those as bad input
        raise ValueError(  # noqa: TRY004
            f"config file {path}: expected a mapping of flag names to values (e.g. `tasks: sst2,mrpc` on its own line), "
            f"got {'a list' if isinstance(values, list) else type(values).__name__ + ' ' + repr(values)[:60]}."
        )
    for key in values:
        if not isinstance(key, str):
            raise ValueError(f"config file {path}, line {lines.get(key)}: key {key!r} is not a flag name; keys are "  # noqa: TRY004
                             "hf-mtl train flags without the leading --, e.g. max_steps.")
    return ConfigFile(path, values, lines)


def read_config_value(path: str, what: str = "file") -> Any:
    """Whatever a YAML/JSON file holds (read as strictly as `read_config`); an empty file is refused."""
    values, _ = _read(path, what)
    if values is None:
        raise ValueError(f"{what} {path} is empty.")
    return values


def _read(path: str, what: str) -> tuple[Any, dict]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{what} {path}: no such file (a relative path is read from {os.getcwd()}). Check the path, or "
            "drop it and give every setting as a flag."
        ) from None
    except IsADirectoryError:
        raise ValueError(f"{what} {path} is a folder; pass a .yaml, .yml or .json file.") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{what} {path}: byte {error.start} is not UTF-8 ({error.reason}); save it as UTF-8 text.") from None
    except OSError as error:
        raise ValueError(f"{what} {path} cannot be read: {error.strerror or error}.") from None
    return _parse_json(path, text) if path.lower().endswith(".json") else _parse_yaml(path, text)


def _parse_json(path: str, text: str) -> tuple[Any, dict]:
    def strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                found = [_line_column(text, m.start()) for m in re.finditer(rf'"{re.escape(key)}"\s*:', text)]
                on = f", at {' and '.join(found)}" if len(found) > 1 else ""
                raise ValueError(f"config file {path}: key {key!r} is given twice{on}; keep one (a key has one value; "
                                 "flags after the config file override it).")
            seen[key] = value
        return seen

    if not text.strip():
        return None, {}
    try:
        values = json.loads(text, object_pairs_hook=strict_object)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":
            problem = "text after the end of the JSON value; a config file holds one JSON object, remove the rest"
        else:
            problem = f"{err.msg}; fix the JSON there (keys and strings in double quotes, a comma between entries, " \
                      "none after the last)"
        raise ValueError(f"config file {path}, line {err.lineno}, column {err.colno}: not valid JSON: {problem}.") from None
    lines = {}
    if isinstance(values, dict):
        for key in values:
            match = re.search(rf'"{re.escape(key)}"\s*:', text)
            lines[key] = text.count("\n", 0, match.start()) + 1 if match else None
    return values, lines


def _line_column(text: str, position: int) -> str:
    line = text.count("\n", 0, position) + 1
    return f"line {line}, column {position - text.rfind(chr(10), 0, position)}"


def _parse_yaml(path: str, text: str) -> tuple[Any, dict]:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last silently)."""

        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key (a list): the constructor reports it
                    continue
                if first is not None:
                    raise ValueError(f"config file {path}: key {key!r} is given twice, on line {first} and line {line}; "
                                     "keep one (a key has one value; flags after the config file override it).")
                seen[key] = line
            return super().construct_mapping(node, deep)

    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
        values = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(p for p in (err.context, err.problem) if p)
        raise ValueError(f"config file {path}{where}: not valid YAML: {problem}. Fix the YAML there: one "
                         "`flag: value` per line, lists as [a, b], quotes around a value holding ': ' or '#'.") from None
    except yaml.YAMLError as err:
        raise ValueError(f"config file {path}: not valid YAML: {err}.") from None
    finally:
        loader.dispose()
    lines = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, _ in node.value:
            try:
                lines[loader.construct_object(key_node, deep=True)] = key_node.start_mark.line + 1
            except (TypeError, yaml.YAMLError):
                pass
    return values, lines


