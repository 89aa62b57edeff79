"""The `edgemerge` command line: merge | convert | zipper | inspect | run | eval | bench | report | boards | build | flash |
export-c. `main` is the click group (cli/common.py); each module below registers its commands on it.
"""
from edgemerge.cli import deploy_commands, measure_commands, merge_commands  # noqa: F401 - they register commands
from edgemerge.cli.common import main

__all__ = ["main"]
