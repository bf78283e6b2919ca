"""``python -m pytest_millrun`` is the ``millrun`` command."""

from __future__ import annotations

from pytest_millrun.cli import main

if __name__ == "__main__":
    main(prog_name="millrun")
