"""Reading a params file as a suite: the forms, the keys, and every way one can be wrong.

The rule that tells a suite from the two seed forms, exactly:

- a list is the list-of-dicts form;
- a dict whose values are *all* lists is the dict-of-equal-length-lists form;
- a dict with *at least one value that is not a list* is a suite.

A valid dict-of-lists has only list values, so no file that was valid before
suites existed changes meaning.  A suite may use only :data:`SUITE_KEYS`; any
other key is an error naming it (with the closest suite key), because a
silent guess here would run the wrong notebooks with the wrong values.  A
dict of lists whose keys are all suite keys (``{"variations": [...],
"prepend": [...]}``) stays the dict-of-lists form it always was, with a
warning saying how to write it as a suite.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_millrun.core.params import (
    BulkParams,
    ParamsError,
    Variation,
    _check_keys,
    normalize_params,
)
from pytest_millrun.core.paramsfile import Locations, read_params_data
from pytest_millrun.core.suite import (
    RESERVED_MARKS,
    RULE_KEYS,
    SUB_SUITE_KEYS,
    SUITE_KEYS,
    MarkRule,
    MillrunSuiteWarning,
    Section,
    Suite,
    SuiteError,
    expand_grid,
    is_list,
)
from pytest_millrun.core.values import RecordNameError, parse_names


def is_suite_form(data: Any) -> bool:
    """The rule: a dict with at least one value that is not a list is a suite."""
    return isinstance(data, Mapping) and any(not is_list(v) for v in data.values())


def load_suite(path: str | Path) -> Suite:
    """Read a JSON or YAML params file in any form; globs are relative to its folder."""
    path = Path(path)
    data, locations = read_params_data(path)
    return build_suite(data, f"Params file {path}", path.resolve().parent, locations)


def resolve_suite(bulk_params: BulkParams | Mapping[str, Any] | str | Path, base: Path) -> Suite:
    """The API's forms: a path, a list of dicts, a dict of lists or a suite dict.

    A dict's globs are relative to ``base`` (the API passes its notebook folder).
    """
    if isinstance(bulk_params, (str, Path)):
        return load_suite(bulk_params)
    return build_suite(bulk_params, "bulk_params", base)


def build_suite(data: Any, source: str, base: Path, locations: Locations | None = None) -> Suite:
    loc = locations or Locations()
    if not is_suite_form(data):
        looks_like_suite = isinstance(data, Mapping) and data and all(k in SUITE_KEYS for k in data)
        hint = (
            "To write a suite, give it a key whose value is not a list: write 'variations' "
            'as a dict of lists, or add "constants": {}.'
        )
        try:
            variations = normalize_params(data, source)
        except ParamsError as exc:
            if looks_like_suite:
                raise ParamsError(f"{exc} {hint}") from None
            raise
        if looks_like_suite:
            warnings.warn(
                MillrunSuiteWarning(
                    f"{source} is read as a dict of equal-length lists because every value "
                    f"is a list, so {', '.join(map(repr, data))} are parameter names, not "
                    f"suite keys. {hint}"
                ),
                stacklevel=3,
            )
        return Suite(source, base, Section("every notebook", None, tuple(variations)))
    _check_suite_keys(data, source, loc)
    top = _section(data, source, loc, "every other notebook", None, top_level=True)
    notebooks = data.get("notebooks")
    sections = _notebook_sections(notebooks, source, loc, base) if "notebooks" in data else ()
    if not sections:
        top = dataclasses.replace(top, label="every notebook")
    marks = _mark_rules(data["marks"], source, loc) if "marks" in data else ()
    return Suite(source, base, top, sections, marks, is_suite=True)


def _check_suite_keys(data: Mapping[Any, Any], source: str, loc: Locations) -> None:
    unknown = [k for k in data if k not in SUITE_KEYS]
    if not unknown:
        return
    known = [k for k in data if k in SUITE_KEYS or _closest(k, SUITE_KEYS)]
    if not known:
        normalize_params(data, source)  # not a suite at all: the seed form's own error
    key = next(k for k in unknown)
    non_list = next(k for k in data if not is_list(data[k]))
    raise SuiteError(
        f"{source}{loc.at(data, key)}: {key!r} is not a suite key{_did_you_mean(key, SUITE_KEYS)}. "
        f"The file is read as a suite because the value of {non_list!r} is not a list, and a "
        f"suite has only the keys {', '.join(SUITE_KEYS)}. Put parameters under 'constants', "
        f"'grid' or 'variations', or make every value a list for the dict-of-lists form."
    )


def _section(
    data: Mapping[Any, Any],
    source: str,
    loc: Locations,
    label: str,
    glob: str | None,
    *,
    top_level: bool = False,
    base: Path | None = None,
) -> Section:
    where = f"{source}: {label}" if not top_level else source
    if not top_level:
        for key in data:
            if key in SUB_SUITE_KEYS:
                continue
            if key in ("notebooks", "marks"):
                fix = (
                    "globs do not nest; list each glob at the top level's 'notebooks'"
                    if key == "notebooks"
                    else f"move the rule to the top level's 'marks' and give it notebooks: {glob!r}"
                )
                raise SuiteError(f"{where}{loc.at(data, key)}: {key!r} is not allowed here; {fix}.")
            raise SuiteError(
                f"{where}{loc.at(data, key)}: {key!r} is not a key of a notebooks "
                f"entry{_did_you_mean(key, SUB_SUITE_KEYS)}. An entry holds "
                f"{', '.join(SUB_SUITE_KEYS)}; put parameters under 'constants', 'grid' or "
                f"'variations' (e.g. variations: {{{key}: [...]}})."
            )
    combined: list[Variation] = []
    if "grid" in data:
        combined += expand_grid(_grid(data["grid"], where, loc, data))
    if "variations" in data:
        value = data["variations"]
        combined += normalize_params(value, f"{where}, 'variations'{loc.at(data, 'variations')}")
    constants: Mapping[str, Any] = {}
    if "constants" in data:
        constants = data["constants"]
        if not isinstance(constants, Mapping):
            raise SuiteError(
                f"{where}{loc.at(data, 'constants')}: 'constants' is a "
                f"{type(constants).__name__}, not a mapping of parameter name to value. Write "
                f"e.g. constants: {{max_nfev: 1}}."
            )
        _check_keys(constants, where, "'constants'")
    # the variation's own keys first (papermill injects in this order), its own value wins
    variations = [
        {**v, **{k: c for k, c in constants.items() if k not in v}} for v in (combined or [{}])
    ]
    _refuse_duplicates(variations, where, label)
    return Section(
        label,
        glob,
        tuple(variations),
        _components(data, "prepend", where, loc),
        _components(data, "append", where, loc),
        record=_record(data, where, loc),
        inputs=_globs(data, "inputs", where, loc, base),
        ignore=_globs(data, "ignore", where, loc, base),
    )


def _record(data: Mapping[Any, Any], where: str, loc: Locations) -> tuple[str, ...]:
    if "record" not in data:
        return ()
    value = data["record"]
    if not isinstance(value, str) and not is_list(value):
        value = [value]  # parse_names says what is wrong with it
    try:
        return parse_names(value, f"{where}{loc.at(data, 'record')}: 'record'")
    except RecordNameError as exc:
        raise SuiteError(str(exc)) from None


_GLOB_EXAMPLES = {"inputs": "[data/prices.csv, 'data/*.json']", "ignore": "['**/*.log', scratch]"}


def _globs(
    data: Mapping[Any, Any], key: str, where: str, loc: Locations, base: Path | None
) -> tuple[str, ...]:
    """A section's ``inputs`` or ``ignore``: globs relative to the params file, made absolute."""
    must_be = (
        "a list of file globs relative to the params file's folder, not {value}. Write e.g. "
        + f"{key}: {_GLOB_EXAMPLES[key]}."
    )
    globs = _string_list(data, key, where, loc, must_be) or ()
    return tuple(os.path.join(base, v) if base is not None else v for v in globs)


def _grid(grid: Any, where: str, loc: Locations, parent: Any) -> Mapping[str, Sequence[Any]]:
    if not isinstance(grid, Mapping):
        raise SuiteError(
            f"{where}{loc.at(parent, 'grid')}: 'grid' is a {type(grid).__name__}, not a mapping "
            f"of parameter name to its list of values. Write e.g. grid: {{x: [1, 2], y: [a, b]}}."
        )
    if not grid:
        raise SuiteError(
            f"{where}{loc.at(parent, 'grid')}: 'grid' has no axes. Give each parameter its "
            f"list of values (grid: {{x: [1, 2]}}), or remove 'grid'."
        )
    _check_keys(grid, where, "'grid'")
    for key, values in grid.items():
        if not is_list(values):
            raise SuiteError(
                f"{where}{loc.at(grid, key)}: the grid axis {key!r} is a "
                f"{type(values).__name__} ({_short(values)}), not a list of values. Write "
                f"{key}: [{_short(values)}] for one value, or move it to 'constants'."
            )
        if not values:
            raise SuiteError(
                f"{where}{loc.at(grid, key)}: the grid axis {key!r} is empty, so the grid has "
                f"no combinations and nothing would run. Give it at least one value, or "
                f"remove the axis."
            )
    return grid


def _components(
    data: Mapping[Any, Any], key: str, where: str, loc: Locations
) -> tuple[str, ...] | None:
    must_be = (
        "a list of components (parameter names or literal text), not {value}. Write e.g. "
        + f"{key}: [region, x]."
    )
    return _string_list(data, key, where, loc, must_be)


def _string_list(
    data: Mapping[Any, Any], key: str, where: str, loc: Locations, must_be: str
) -> tuple[str, ...] | None:
    """A key's non-empty strings, as a list or one comma-separated string; None when absent.

    ``must_be`` completes the error's "'key' must be ..." with ``{value}`` for the value.
    """
    if key not in data:
        return None
    value = data[key]
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not is_list(value) or not all(isinstance(v, str) and v for v in value):
        raise SuiteError(
            f"{where}{loc.at(data, key)}: {key!r} must be {must_be.format(value=_short(value))}"
        )
    return tuple(value)


def _notebook_sections(
    value: Any, source: str, loc: Locations, base: Path | None = None
) -> tuple[Section, ...]:
    if not isinstance(value, Mapping):
        raise SuiteError(
            f"{source}: 'notebooks' is a {type(value).__name__}, not a mapping of glob to "
            f"suite. Write e.g. notebooks: {{'calibrate.ipynb': {{constants: {{max_nfev: 1}}}}}}."
        )
    sections: list[Section] = []
    for glob, entry in value.items():
        if not isinstance(glob, str) or not glob.strip():
            raise SuiteError(
                f"{source}{loc.at(value, glob)}: the notebooks key {glob!r} is not a glob. Use "
                f"a path relative to the params file's folder, such as 'sub/*.ipynb'."
            )
        label = f"notebooks {glob!r}"
        if entry is None:
            entry = {}
        if is_list(entry):
            entry = {"variations": entry}
        elif not isinstance(entry, Mapping):
            raise SuiteError(
                f"{source}{loc.at(value, glob)}: {label} is a {type(entry).__name__}, not a "
                f"suite (a mapping with grid, variations, constants, prepend, append) or a "
                f"list of variations."
            )
        section = _section(entry, source, loc, label, glob, base=base)
        position = loc.of(value, glob)
        sections.append(dataclasses.replace(section, line=position[0] if position else None))
    return tuple(sections)


def _mark_rules(value: Any, source: str, loc: Locations) -> tuple[MarkRule, ...]:
    example = '{where: {x: 3}, xfail: "known drift"}'
    if not is_list(value):
        raise SuiteError(
            f"{source}: 'marks' is a {type(value).__name__}, not a list of rules. Write e.g. "
            f"marks: [{example}]."
        )
    rules: list[MarkRule] = []
    for index, rule in enumerate(value):
        position = loc.of(value, index)
        at = f" at line {position[0]}, column {position[1]}" if position else ""
        label = f"marks rule {index + 1}{at}"
        if not isinstance(rule, Mapping):
            raise SuiteError(
                f"{source}: {label} is a {type(rule).__name__}, not a mapping. Write e.g. "
                f"{example}."
            )
        names = [k for k in rule if k not in RULE_KEYS]
        if len(names) != 1:
            hints = "".join(
                f" ({k!r}: did you mean {close!r}?)"
                for k in names
                if (close := _closest(k, RULE_KEYS)) is not None
            )
            raise SuiteError(
                f"{source}: {label} names {len(names)} marks ({', '.join(map(repr, names))})"
                f"{hints}. A rule has optional notebooks, where and ids, and exactly one mark "
                f"(skip, xfail or a marker name) with its reason, e.g. {example}."
            )
        name = names[0]
        reason = rule[name]
        if not isinstance(name, str) or not name.isidentifier() or name in RESERVED_MARKS:
            raise SuiteError(
                f"{source}: {label} uses the mark {name!r}, which a rule cannot set. Use skip, "
                f"xfail or a plain marker name (not {', '.join(RESERVED_MARKS)})."
            )
        if reason is True:
            reason = None
        if reason is not None and not isinstance(reason, str):
            raise SuiteError(
                f"{source}: {label}: the reason of {name!r} is {_short(reason)}; give a text "
                f"(or true for none)."
            )
        where = rule.get("where", {}) or {}
        if not isinstance(where, Mapping):
            raise SuiteError(
                f"{source}: {label}: 'where' is a {type(where).__name__}, not a mapping of "
                f"parameter to value, e.g. where: {{region: us}}."
            )
        globs = {}
        for key in ("notebooks", "ids"):
            if key in rule and not isinstance(rule[key], str):
                raise SuiteError(
                    f"{source}: {label}: {key!r} must be one glob as text, not {_short(rule[key])}."
                )
            globs[key] = rule.get(key)
        rules.append(
            MarkRule(
                label=f"{label} ({_describe_rule(rule, name)})",
                line=position[0] if position else None,
                name=name,
                reason=reason,
                notebooks=globs["notebooks"],
                where=dict(where),
                ids=globs["ids"],
            )
        )
    return tuple(rules)


def _describe_rule(rule: Mapping[str, Any], name: str) -> str:
    parts = [name]
    if "notebooks" in rule:
        parts.append(f"notebooks {rule['notebooks']!r}")
    if rule.get("where"):
        parts.append("where " + ", ".join(f"{k}={v!r}" for k, v in rule["where"].items()))
    if "ids" in rule:
        parts.append(f"ids {rule['ids']!r}")
    return " ".join(parts)


def _refuse_duplicates(variations: Sequence[Variation], where: str, label: str) -> None:
    seen: dict[str, int] = {}
    for index, variation in enumerate(variations):
        try:
            key = json.dumps(variation, sort_keys=True, default=repr)
        except (TypeError, ValueError, RecursionError):
            key = repr(variation)
        if key in seen:
            raise SuiteError(
                f"{where}: {label} gets the variation {_short(variation)} twice (numbers "
                f"{seen[key]} and {index}, grid combinations first, then 'variations'), so "
                f"both would run the same values into the same output name. Remove one of "
                f"them or change a value."
            )
        seen[key] = index


def _closest(key: Any, choices: Sequence[str]) -> str | None:
    if not isinstance(key, str):
        return None
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.75)
    return close[0] if close else None


def _did_you_mean(key: Any, choices: Sequence[str]) -> str:
    close = _closest(key, choices)
    return f" (did you mean {close!r}?)" if close else ""


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
