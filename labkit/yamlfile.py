"""YAML a person wrote (lab files, secrets files, ``-p`` values), read defensively: aliases may
not expand beyond a small bound (a 1 KB "billion laughs" file would otherwise become gigabytes
once validated or printed), recursive aliases and duplicate keys are refused (a second ``nodes:``
would silently replace the first). Errors name the line; they never quote values."""

from __future__ import annotations

from typing import Any

import yaml

MAX_NODES = 100_000  # values after alias expansion; a lab file has a few hundred


class YamlProblem(ValueError):
    """The text is not YAML labkit accepts; the message names the line and the fix."""


def load(text: str) -> Any:
    """The document in ``text`` (None if empty), parsed with PyYAML's safe loader."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check(node)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise YamlProblem(f"{where}not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    except RecursionError:
        raise YamlProblem("values nested too deeply to be a lab's; flatten them") from None
    finally:
        loader.dispose()


def _check(root: yaml.Node) -> None:
    sizes: dict[int, int] = {}
    if _size(root, sizes, set()) > MAX_NODES:
        raise YamlProblem(f"aliases (*name) expand to more than {MAX_NODES} values, as a YAML bomb does; "
                          "write the values out")


def _size(node: yaml.Node, sizes: dict[int, int], path: set[int]) -> int:
    """How many values ``node`` stands for once every alias is expanded (memoised per node, so a
    bomb is measured without being expanded)."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in path:
        raise YamlProblem(f"line {node.start_mark.line + 1}: a recursive alias (an anchor used inside itself); "
                          "write the value out")
    path.add(id(node))
    if isinstance(node, yaml.MappingNode):
        _no_duplicate_keys(node)
        children = [child for pair in node.value for child in pair]
    else:
        children = node.value if isinstance(node, yaml.SequenceNode) else []
    size = 1
    for child in children:
        size += _size(child, sizes, path)
        if size > MAX_NODES:
            break
    path.discard(id(node))
    sizes[id(node)] = size
    return size


def _no_duplicate_keys(node: yaml.MappingNode) -> None:
    seen: dict[str, int] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        line = key.start_mark.line + 1
        if key.value in seen:
            raise YamlProblem(f"line {line}: key '{key.value[:40]}' appears twice in one mapping (first on line "
                              f"{seen[key.value]}); the second would silently replace the first: keep one")
        seen[key.value] = line
