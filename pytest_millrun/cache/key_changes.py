"""Why a stored cache key is not the current one, in words a re-run's ``-v`` shows.

Why its own module: :mod:`.verdicts` decides hit or miss for a local output and
for one on object storage alike; saying *what* changed, part by part, is pure
logic over two keys' parts, tested without any output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pytest_millrun.cache.keys import too_large

#: At most this many changed distributions are named in a reason.
_NAMED = 3

def key_changes(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    old_distributions: Mapping[str, str] | None = None,
    new_distributions: Mapping[str, str] | None = None,
) -> list[str]:
    """Why a stored key is not the current one, part by part; empty when they are equal."""
    if old == new:
        return []
    reasons: list[str] = []
    if old.get("schema") != new.get("schema"):
        return ["cache key schema changed"]
    if old.get("millrun") != new.get("millrun"):
        reasons.append(f"millrun version changed ({old.get('millrun')} -> {new.get('millrun')})")
    reasons += _cell_changes(old.get("cells") or [], new.get("cells") or [])
    old_kernel, new_kernel = old.get("kernel") or {}, new.get("kernel") or {}
    if old_kernel != new_kernel:
        reasons.append(
            f"kernel changed ({_kernel_words(old_kernel)} -> {_kernel_words(new_kernel)})"
        )
    reasons += _mapping_changes("parameter", old.get("parameters"), new.get("parameters"))
    if old.get("record") != new.get("record"):
        reasons.append("recorded names changed")
    reasons += _mapping_changes("option", old.get("options"), new.get("options"))
    old_env, new_env = old.get("environment") or {}, new.get("environment") or {}
    if old_env != new_env:
        reasons.append(
            _environment_words(old_env, new_env, old_distributions or {}, new_distributions or {})
        )
    reasons += _input_changes(old.get("inputs") or {}, new.get("inputs") or {})
    if old.get("ignore") != new.get("ignore"):
        reasons.append("ignored globs changed")
    known = {"schema", "millrun", "cells", "kernel", "parameters", "record", "options"}
    known |= {"environment", "inputs", "ignore"}
    if not reasons and any(old.get(k) != new.get(k) for k in set(old) | set(new) - known):
        reasons.append("cache key changed")
    return reasons or ["cache key changed"]


def _cell_changes(old: Sequence[str], new: Sequence[str]) -> list[str]:
    if list(old) == list(new):
        return []
    if len(old) != len(new):
        return [f"code cells added or removed ({len(old)} -> {len(new)})"]
    changed = [str(i + 1) for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]
    if len(changed) == 1:
        return [f"code cell {changed[0]} changed"]
    return [f"code cells {', '.join(changed)} changed"]


def _kernel_words(kernel: Mapping[str, Any]) -> str:
    name = kernel.get("name") or "?"
    return f"{name}, {kernel['language']}" if kernel.get("language") else str(name)


def _mapping_changes(what: str, old: Any, new: Any) -> list[str]:
    old, new = dict(old or {}), dict(new or {})
    if old == new:
        return []
    names = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return [f"{what}s changed ({', '.join(names)})"]


def _environment_words(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    old_distributions: Mapping[str, str],
    new_distributions: Mapping[str, str],
) -> str:
    if old.get("executable") != new.get("executable") or old.get("python") != new.get("python"):
        return (
            f"environment changed (interpreter {old.get('executable', '?')} "
            f"{old.get('python', '')} -> {new.get('executable', '?')} {new.get('python', '')})"
        ).replace(" )", ")")
    if old.get("distributions") != new.get("distributions") and (
        old_distributions or new_distributions
    ):
        changes = []
        for name in sorted(set(old_distributions) | set(new_distributions)):
            a, b = old_distributions.get(name), new_distributions.get(name)
            if a == b:
                continue
            if a is None:
                changes.append(f"{name} {b} added")
            elif b is None:
                changes.append(f"{name} {a} removed")
            else:
                changes.append(f"{name} {a} -> {b}")
        if changes:
            more = f", {len(changes) - _NAMED} more" if len(changes) > _NAMED else ""
            return f"environment changed ({', '.join(changes[:_NAMED])}{more})"
    return "environment changed"


def _input_changes(old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    reasons = []
    for name in sorted(set(old) | set(new)):
        if name not in old:
            reasons.append(f"input {name} added")
        elif name not in new:
            reasons.append(f"input {name} removed")
        elif old[name] != new[name]:
            reasons.append(f"input {name} changed{too_large(old[name])}")
    return reasons
