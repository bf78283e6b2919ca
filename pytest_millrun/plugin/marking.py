"""pytest marks for notebook items: the ``millrun`` marker and a suite's ``marks`` rules.

Every item carries ``millrun(**scalar parameters)``, so pytest's own ``-m``
selects variations by value (``-m "millrun(region='eu')"``, pytest 8.3 or
later for the keyword form), and a suite's rules become real marks, so
``-rxs``, ``--runxfail`` and ``-m slow`` treat them as marks written in code.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_millrun.core.params import Variation
    from pytest_millrun.core.suite import MarkRule, Suite
    from pytest_millrun.plugin.session import MillrunSession

#: pytest's marker expressions accept keyword arguments from this version on.
KEYWORD_MATCHING = (8, 3)


def check_mark_expression(config: pytest.Config) -> None:
    """Refuse ``-m "millrun(...)"`` where pytest cannot match it (the hooks register the marker)."""
    expression = config.getoption("markexpr", "") or ""
    if "millrun(" in expression.replace(" ", "") and pytest_version() < KEYWORD_MATCHING:
        raise pytest.UsageError(
            f"-m {expression!r} selects by parameter value, which needs pytest 8.3 or later "
            f"(this is pytest {pytest.__version__}). Upgrade pytest, or select with -k on the "
            f"ids (--millrun-prepend gives ids made of parameter values)."
        )


def pytest_version() -> tuple[int, ...]:
    parts = []
    for part in pytest.__version__.split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def check_mark_names(config: pytest.Config, suite: Suite | None) -> None:
    """Unknown mark names follow ``--strict-markers``: refused there before anything runs.

    pytest's own check (looking the name up on ``pytest.mark``) decides, so the
    rule is exactly pytest's in every version; without strict markers pytest
    warns when the mark is applied.
    """
    if suite is None:
        return
    for rule in suite.marks:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                getattr(pytest.mark, rule.name)
            except pytest.fail.Exception as exc:
                raise pytest.UsageError(
                    f"{suite.source}: {rule.label} uses the mark {rule.name!r}, which is not "
                    f"registered ({exc.msg}), and --strict-markers is on. Register it in the "
                    f"'markers' ini option, or use skip or xfail."
                ) from None


def marks_for(
    session: MillrunSession, notebook: Path, variation: Variation, variation_id: str
) -> list[pytest.MarkDecorator]:
    """The ``millrun`` marker and the marks of every rule that matches this item."""
    from pytest_millrun.core.suite import marker_kwargs

    marks = [pytest.mark.millrun(**marker_kwargs(variation))]
    suite = session.settings.suite
    if suite is None:
        return marks
    for index, rule in enumerate(suite.marks):
        if rule.matches(suite.relative(notebook), variation, variation_id):
            session.matched_rules.add(index)
            marks.append(_mark(rule))
    return marks


def _mark(rule: MarkRule) -> pytest.MarkDecorator:
    decorator: pytest.MarkDecorator = getattr(pytest.mark, rule.name)
    return decorator(reason=rule.reason) if rule.reason is not None else decorator


def warn_unmatched(session: MillrunSession) -> None:
    """A glob or rule that matched nothing collected is most likely a typo in it."""
    from pytest_millrun.core.suite import MillrunSuiteWarning

    config, suite, path = session.config, session.settings.suite, session.settings.params_file
    if suite is None or not suite.is_suite:
        return
    if not says_collection_warnings(config):
        return
    # At the params file's line of the glob or rule; line 0 where unknown (a JSON file), so
    # no unrelated line ("{") is quoted as its source.
    filename = os.path.relpath(path, config.invocation_params.dir) if path else suite.source
    for section, message in suite.unmatched_globs(session.matched_globs):
        warnings.warn_explicit(
            MillrunSuiteWarning(message), MillrunSuiteWarning, filename, section.line or 0
        )
    for index, rule in enumerate(suite.marks):
        if index not in session.matched_rules and not _outside_this_run(rule, session, suite):
            warnings.warn_explicit(
                MillrunSuiteWarning(
                    f"{suite.source}: {rule.label} matched no collected item, so it marks "
                    f"nothing. Check its notebooks glob (relative to {suite.base}), its "
                    f"where values and its ids glob against --collect-only -q."
                ),
                MillrunSuiteWarning,
                filename,
                rule.line or 0,
            )


def _outside_this_run(rule: MarkRule, session: MillrunSession, suite: Suite) -> bool:
    """A rule for notebooks that exist but that this run did not collect (a subset of the
    suite was asked for): it cannot have matched, and is no typo."""
    from pytest_millrun.core.globs import glob_match, glob_matches_a_file

    if rule.notebooks is None:
        return False
    if any(glob_match(rule.notebooks, relative) for relative in session.collected):
        return False
    return glob_matches_a_file(suite.base, rule.notebooks)


def says_collection_warnings(config: pytest.Config) -> bool:
    """Whether this process warns about what it collects: every xdist worker collects
    everything, so one of them (``gw0``) says it, once."""
    worker: dict[str, str] = getattr(config, "workerinput", {})
    return worker.get("workerid", "gw0") == "gw0"


def variation_counts(items: Sequence[pytest.Item], root: Path) -> list[str]:
    """One header line per notebook with the number of variations it got, in collection order."""
    counts: dict[Path, int] = {}
    for item in items:
        if hasattr(item, "variation_id"):
            counts[item.path] = counts.get(item.path, 0) + 1
    if not counts:
        return []
    parts = []
    for path, count in counts.items():
        try:
            name = str(path.relative_to(root))
        except ValueError:
            name = str(path)
        parts.append(f"{name} {count}")
    return [f"millrun: variations per notebook: {', '.join(parts)}"]
