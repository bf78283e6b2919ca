"""Reading a params file (JSON, or YAML for ``.yaml``/``.yml``) with the positions of its parts.

A params file is read once per run and the data tree is checked right after,
so the YAML loader records where every mapping key and list entry stands
(by the id of the container, which lives as long as the tree): an error about
a grid axis or a mark rule can then name its line and column, not just its
name.  JSON has no positions to offer beyond its parse errors.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, ClassVar

from pytest_millrun.core.params import ParamsError

YAML_SUFFIXES = (".yaml", ".yml")

_FORMS = (
    'Give either a list of dicts, e.g. [{"x": 1, "y": 2}, {"x": 3, "y": 4}], '
    'or a dict of equal-length lists, e.g. {"x": [1, 3], "y": [2, 4]}, or a suite '
    '(a dict with keys such as "grid" and "notebooks").'
)


class Locations:
    """Line and column (1-based) of each key of a mapping and each entry of a list."""

    def __init__(self) -> None:
        self._keys: dict[int, dict[Any, tuple[int, int]]] = {}
        self._entries: dict[int, list[tuple[int, int]]] = {}
        self._nodes: dict[int, tuple[int, int]] = {}

    def record_key(self, mapping: object, key: Any, position: tuple[int, int]) -> None:
        self._keys.setdefault(id(mapping), {})[key] = position

    def record_entries(self, sequence: object, positions: list[tuple[int, int]]) -> None:
        self._entries[id(sequence)] = positions

    def record_node(self, value: object, position: tuple[int, int]) -> None:
        self._nodes.setdefault(id(value), position)

    def of(self, container: object, key: Any = None) -> tuple[int, int] | None:
        """Where ``container[key]`` is written (its key), or the container itself."""
        if key is None:
            return self._nodes.get(id(container))
        if isinstance(key, int) and id(container) in self._entries:
            entries = self._entries[id(container)]
            return entries[key] if 0 <= key < len(entries) else None
        return self._keys.get(id(container), {}).get(key)

    def at(self, container: object, key: Any = None) -> str:
        """`` at line L, column C`` for messages, or nothing when unknown (JSON)."""
        position = self.of(container, key)
        return f" at line {position[0]}, column {position[1]}" if position else ""


def read_params_data(path: str | Path) -> tuple[Any, Locations]:
    """The parsed content of a params file and where its parts stand."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(
            f"Params file {path} does not exist. Check the path (relative paths are taken "
            f"from the current directory, or from the ini file's folder for an ini setting)."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ParamsError(f"Params file {path} cannot be read: {exc}.") from None
    if path.suffix.lower() in YAML_SUFFIXES:
        return _read_yaml(path, text)
    try:
        return json.loads(text), Locations()
    except RecursionError:
        raise _too_deep(path) from None
    except json.JSONDecodeError as exc:
        raise ParamsError(
            f"Params file {path} is not valid JSON: {exc.msg} at line {exc.lineno}, "
            f"column {exc.colno}. Fix the JSON there (a trailing comma or single quotes "
            f"are the usual causes). {_FORMS}"
        ) from None


def _too_deep(path: Path) -> ParamsError:
    return ParamsError(
        f"Params file {path} nests lists or dicts too deeply to read. Flatten the values: "
        f"a parameter value is meant to be a number, a string or a small structure."
    )


def _read_yaml(path: Path, text: str) -> tuple[Any, Locations]:
    import yaml

    locations = Locations()

    class Loader(yaml.SafeLoader):  # type: ignore[misc]
        """SafeLoader that records positions, refuses duplicate keys and keeps dates as text.

        A date would reach the notebook as ``2024-01-01``, which Python reads as
        a subtraction; duplicate keys would silently drop all but the last one.
        """

        yaml_implicit_resolvers: ClassVar[dict[Any, Any]] = {
            first: [(tag, regexp) for tag, regexp in resolvers if not tag.endswith(":timestamp")]
            for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
        }

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, tuple[int, int]] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                where = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                if isinstance(key, (str, int, float, bool)) and key in seen:
                    raise ParamsError(
                        f"Params file {path} has the key {key!r} twice in one mapping, at "
                        f"line {seen[key][0]}, column {seen[key][1]} and at line {where[0]}, "
                        f"column {where[1]}. YAML keeps only the last one; remove or rename one."
                    )
                seen[key] = where
            mapping = super().construct_mapping(node, deep=True)
            for key_node, _ in node.value:  # merged (<<) keys included, own keys last
                key = self.construct_object(key_node, deep=True)
                with contextlib.suppress(TypeError):
                    locations.record_key(
                        mapping, key, (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                    )
            locations.record_node(mapping, (node.start_mark.line + 1, node.start_mark.column + 1))
            return mapping

        def construct_sequence(self, node: Any, deep: bool = False) -> Any:
            sequence = super().construct_sequence(node, deep=True)
            locations.record_entries(
                sequence, [(n.start_mark.line + 1, n.start_mark.column + 1) for n in node.value]
            )
            locations.record_node(sequence, (node.start_mark.line + 1, node.start_mark.column + 1))
            return sequence

    Loader.add_constructor("tag:yaml.org,2002:map", Loader.construct_mapping)
    Loader.add_constructor("tag:yaml.org,2002:seq", Loader.construct_sequence)
    try:
        return yaml.load(text, Loader=Loader), locations
    except RecursionError:
        raise _too_deep(path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ParamsError(
            f"Params file {path} is not valid YAML: {problem}{at}. Fix the YAML there "
            f"(indentation, a missing space after ':' or an unclosed quote are the usual "
            f"causes). {_FORMS}"
        ) from None
