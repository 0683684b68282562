"""Load a proxy config from YAML, keeping line numbers for error messages.

`load_file(path)` reads the file with ruamel.yaml's round-trip loader (which records the line of
every key and list item), turns it into plain data, and calls `parse_config` with a `where` that
maps a key path back to ``"{path}:{line}"``. Every error reads
``"{path}:{line}: {key path}: {what is wrong}"`` and is a `ConfigError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from helios_core.config import _line
from helios_core.proxy.model import KeyPath, ProxyConfig, ProxyConfigError, parse_config

__all__ = ["load_file", "load_text", "line_of"]


def _plain(node: Any) -> Any:
    """ruamel's Commented* containers → dict/list, scalar subclasses → plain str/int/float/bool."""
    if isinstance(node, dict):
        return {(str(k) if isinstance(k, str) else k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    for tp in (int, float, str):
        if isinstance(node, tp):
            return tp(node)
    return node


def line_of(doc: Any, path: KeyPath) -> int | None:
    """The line of the deepest part of `path` present in `doc` (1-based), or None.

    A missing key reports the line of its nearest parent that exists, which is where it belongs.
    """
    node, line = doc, 1 if doc is not None else None
    for part in path:
        if isinstance(node, CommentedMap) and part in node:
            line = _line(node, part) or line
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            try:
                line = int(node.lc.item(part)[0]) + 1
            except (AttributeError, KeyError, TypeError):
                pass
            node = node[part]
        else:
            break
    return line


def load_text(text: str, name: str = "<string>") -> ProxyConfig:
    """Parse YAML text; errors name `name` as the file."""
    try:
        doc = YAML(typ="rt").load(text)
    except MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        location = f"{name}:{line}" if line else name
        raise ProxyConfigError(f"invalid YAML: {err.problem or err}", location=location) from err
    except YAMLError as err:
        raise ProxyConfigError(f"invalid YAML: {err}", location=name) from err

    def where(path: KeyPath) -> str:
        line = line_of(doc, path)
        return f"{name}:{line}" if line else name

    if doc is not None and not isinstance(doc, CommentedMap):
        raise ProxyConfigError("expected a mapping at the top level (pools:, routes:, ...)", location=f"{name}:1")
    return parse_config(_plain(doc), where=where)


def load_file(path: str | Path) -> ProxyConfig:
    """Load and validate a proxy YAML file; ConfigError ``"{path}:{line}: {key}: {problem}"`` if wrong."""
    name = str(path)
    p = Path(path)
    if not p.exists():
        raise ProxyConfigError(f"config file not found: {name}", location=name)
    if not p.is_file():
        raise ProxyConfigError(f"config path is not a file: {name}", location=name)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ProxyConfigError(f"cannot read config: {err}", location=name) from err
    return load_text(text, name)
