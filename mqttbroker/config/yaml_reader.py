"""Reading a YAML config file into plain values, a map key path -> 1-based line, and issues
(duplicate keys, non-string keys, syntax errors); merging overrides into what was read.

It also holds what reading and checking share: key paths (``_KeyPath``, ``_dotted``), the
``_INVALID`` marker for a value whose problem is already reported, hyphen/underscore key
spelling (``_canon``) and how a wrong value reads in a message (``_describe``,
``_choices_msg``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import yaml

from ..errors import ConfigError, ConfigIssue

_KeyPath = tuple[str | int, ...]
_INVALID: Final[Any] = object()  # stands for a value whose problem is already reported
_MAX_NODES: Final = 100_000  # guards against alias expansion ("billion laughs")


def _dotted(path: _KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _canon(key: str) -> str:
    return key.replace("-", "_")


_KINDS: Final = ((int, "an integer"), (float, "a number"), (str, "a string"),
                  (Mapping, "a mapping"), (list, "a list"))


def _describe(value: Any) -> str:
    """How a wrong value reads in a message: ``a string ('yes')``."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()}; YAML reads yes/no/on/off as booleans)"
    kind = next((name for t, name in _KINDS if isinstance(value, t)), type(value).__name__)
    return f"{kind} ({value!r})" if isinstance(value, int | float | str) else kind


def _choices_msg(choices: tuple[str, ...], value: object) -> str:
    return f"must be one of {', '.join(choices)}; got {value!r}"


def _read_yaml(filename: str) -> tuple[Any, dict[_KeyPath, int], list[ConfigIssue]]:
    """Parse ``filename`` into plain values, a map key path -> 1-based line, and issues.

    Syntax errors are fatal (there is no tree to check); duplicate and non-string keys are
    reported and checking goes on.
    """
    try:
        with open(filename, "rb") as fh:
            data = fh.read()
        text = data.decode("utf-8-sig")
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except OSError as exc:
        issue = ConfigIssue("", None, f"cannot read config file: {exc.strerror or exc}")
        raise ConfigError([issue], filename) from None
    except UnicodeDecodeError as exc:
        at = data[: exc.start].count(b"\n") + 1
        raise ConfigError([ConfigIssue("", at, "not valid UTF-8 text")], filename) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "cannot parse"
        if exc.problem and exc.context:
            problem += f" ({exc.context})"
        line = None if mark is None else mark.line + 1
        raise ConfigError([ConfigIssue("", line, f"invalid YAML: {problem}")], filename) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue("", None, f"invalid YAML: {exc}")], filename) from None
    reader = _YamlReader(filename)
    value = None if root is None else reader.convert(root, ())
    return value, reader.lines, reader.issues


class _YamlReader:
    """Turns composed YAML nodes into Python values, recording lines and duplicate keys."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.lines: dict[_KeyPath, int] = {}
        self.issues: list[ConfigIssue] = []
        self._constructor = yaml.constructor.SafeConstructor()
        self._active: set[int] = set()
        self._count = 0

    def _issue(self, path: _KeyPath, node: yaml.Node, problem: str) -> None:
        self.issues.append(ConfigIssue(_dotted(path), node.start_mark.line + 1, problem))

    def convert(self, node: yaml.Node, path: _KeyPath) -> Any:
        self._count += 1
        if self._count > _MAX_NODES:
            issue = ConfigIssue(_dotted(path), None, "YAML expands to too many values (aliases?)")
            raise ConfigError([issue], self.filename)
        if isinstance(node, yaml.ScalarNode):
            try:
                return self._constructor.construct_object(node, deep=True)
            except yaml.MarkedYAMLError as exc:  # e.g. an unknown !tag
                self._issue(path, node, str(exc.problem))
                return _INVALID
        if id(node) in self._active:
            self._issue(path, node, "recursive YAML alias")
            return _INVALID
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                items = []
                for i, child in enumerate(node.value):
                    self.lines[(*path, i)] = child.start_mark.line + 1
                    items.append(self.convert(child, (*path, i)))
                return items
            return self._mapping(node, path)
        finally:
            self._active.discard(id(node))

    def _mapping(self, node: yaml.Node, path: _KeyPath) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        explicit: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        for knode, vnode in node.value:
            if knode.tag == "tag:yaml.org,2002:merge":  # "<<: *anchor"; explicit keys win
                for src in vnode.value if isinstance(vnode, yaml.SequenceNode) else [vnode]:
                    value = self.convert(src, path)
                    if isinstance(value, dict):
                        merged = {**value, **merged}
                    elif value is not _INVALID:
                        self._issue((*path, "<<"), knode, "a merge key needs a mapping")
                continue
            key, text = self.convert(knode, path), getattr(knode, "value", "?")
            if not isinstance(key, str):
                if key is not _INVALID:
                    self._issue((*path, str(text)), knode, f"key must be a string; YAML reads "
                                f"{text!r} as {_describe(key)} (quote it: '{text}')")
                continue
            if key in first_line:
                self._issue((*path, key), knode,
                            f"duplicate key (first given on line {first_line[key]})")
                continue
            first_line[key] = knode.start_mark.line + 1
            explicit[key] = self.convert(vnode, (*path, key))
        for key, line in first_line.items():
            self.lines[(*path, key)] = line
        return {**merged, **explicit}


def _merge(
    base: Mapping[str, Any], over: Mapping[str, Any], lines: dict[_KeyPath, int], path: _KeyPath
) -> dict[str, Any]:
    """Deep-merge ``over`` into a copy of ``base``; replaced values lose their line."""
    out = dict(base)
    for key, value in over.items():
        target = key
        if key not in out and isinstance(key, str):
            target = next((k for k in out if isinstance(k, str) and _canon(k) == _canon(key)), key)
        current = out.get(target)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            out[target] = _merge(current, value, lines, (*path, target))
            continue
        prefix = (*path, target)
        for known in [p for p in lines if p[: len(prefix)] == prefix]:
            del lines[known]
        out.pop(target, None)
        out[key] = value
    return out
