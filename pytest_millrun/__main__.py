"""``python -m pytest_millrun`` is the ``millrun`` command."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main(prog_name="millrun")
