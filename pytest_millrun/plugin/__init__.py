"""The pytest front end: hooks, notebook items, options, marks, the results and snapshot glue.

The ``pytest11`` entry point names :mod:`pytest_millrun.plugin.hooks`.
"""
