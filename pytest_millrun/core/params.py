"""Loading and validating parameter variations.

Parameters arrive either as a list of dicts (one dict per variation) or as a
dict of equal-length lists (zipped into variations).  Everything that can be
wrong with them is caught here, before any kernel starts, so that a typo in a
params file costs the user one clear message instead of a run of failures.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

Variation = dict[str, Any]
BulkParams = Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]]

_FORMS = (
    'Give either a list of dicts, e.g. [{"x": 1, "y": 2}, {"x": 3, "y": 4}], '
    'or a dict of equal-length lists, e.g. {"x": [1, 3], "y": [2, 4]}.'
)


class ParamsError(ValueError):
    """Raised for parameters that cannot be turned into a list of variations.

    The message is one paragraph that names the source and says how to fix it,
    so front ends can show it as is, without a traceback.
    """


def normalize_params(data: Any, source: str = "The parameters") -> list[Variation]:
    """Turn either accepted form into a list of variation dicts.

    ``source`` starts every error message, so callers say where the data came
    from ("Params file params.json", "bulk_params").
    """
    if isinstance(data, Mapping):
        variations = _zip_dict_of_lists(data, source)
    elif isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        variations = _check_list_of_dicts(data, source)
    else:
        raise ParamsError(
            f"{source} has a top level of type {type(data).__name__}, which is neither a list "
            f"of dicts nor a dict of lists. {_FORMS}"
        )
    _check_encodable(variations, source)
    return variations


def _check_list_of_dicts(data: Sequence[Any], source: str) -> list[Variation]:
    if not data:
        raise ParamsError(f"{source} is an empty list, so there is nothing to run. {_FORMS}")
    variations: list[Variation] = []
    for index, entry in enumerate(data):
        if not isinstance(entry, Mapping):
            raise ParamsError(
                f"{source}: entry {index} is a {type(entry).__name__} ({_short(entry)}), "
                f"not a dict of parameter names to values. Make every list entry a dict "
                f'such as {{"x": 1}}.'
            )
        _check_keys(entry, source, f"entry {index}")
        variations.append(dict(entry))
    return variations


def _zip_dict_of_lists(data: Mapping[Any, Any], source: str) -> list[Variation]:
    if not data:
        raise ParamsError(f"{source} is an empty dict, so there is nothing to run. {_FORMS}")
    _check_keys(data, source, "the top-level dict")
    lengths: dict[str, int] = {}
    for key, values in data.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise ParamsError(
                f"{source}: the value of {key!r} is a {type(values).__name__} "
                f"({_short(values)}), not a list. In the dict-of-lists form every value is "
                f"the list of that parameter's values, one per variation: write "
                f"{json.dumps({key: [values]}, default=repr)} for a single variation."
            )
        lengths[key] = len(values)
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{key!r} has {n}" for key, n in lengths.items())
        raise ParamsError(
            f"{source}: the lists have unequal lengths ({detail}). Every list must have one "
            f"value per variation; make them the same length."
        )
    count = next(iter(lengths.values()))
    if count == 0:
        raise ParamsError(f"{source}: the lists are empty, so there is nothing to run.")
    keys = list(data)
    columns = [data[key] for key in keys]
    return [dict(zip(keys, row, strict=False)) for row in zip(*columns, strict=False)]


def _check_keys(mapping: Mapping[Any, Any], source: str, where: str) -> None:
    """Keys must be names; whether a name suits the notebook's language is checked per
    notebook when the run is planned (papermill writes parameters in that language)."""
    for key in mapping:
        if not isinstance(key, str) or not key.strip():
            raise ParamsError(
                f"{source}: {where} has the key {key!r}, which is not a parameter name. "
                f"Use names made of letters, digits and underscores."
            )


def _check_encodable(variations: Sequence[Variation], source: str) -> None:
    """Every string must reach the kernel as UTF-8; JSON's ``\\ud800`` escape makes one that cannot.

    Walked without recursion and each container once, so values that are deep or
    hold themselves (possible through the API) are no trouble.
    """
    for index, variation in enumerate(variations):
        for key, value in variation.items():
            stack: list[Any] = [key, value]
            walked: set[int] = set()
            while stack:
                item = stack.pop()
                if isinstance(item, (Mapping, list, tuple)):
                    if id(item) in walked:
                        continue
                    walked.add(id(item))
                if isinstance(item, str):
                    try:
                        item.encode("utf-8")
                    except UnicodeEncodeError as exc:
                        raise ParamsError(
                            f"{source}: variation {index}, parameter {key!r} holds "
                            f"{_short(item)}, whose character {item[exc.start]!r} is half of a "
                            f"surrogate pair and cannot be encoded as UTF-8 for the kernel. "
                            f"Write the character itself, or both halves of the pair "
                            f"(e.g. \\ud83d\\ude00)."
                        ) from None
                elif isinstance(item, Mapping):
                    stack.extend(item.keys())
                    stack.extend(item.values())
                elif isinstance(item, (list, tuple)):
                    stack.extend(item)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
