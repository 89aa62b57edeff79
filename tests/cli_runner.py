"""The edgemerge CLI as the tests run it: `python -m edgemerge.cli ARGS` in a child process, its text output
captured (stdout, stderr, returncode), so tests see exactly what a user's shell would. One runner for every test
file; a file that wants other defaults binds them with functools.partial (cwd, timeout)."""
from __future__ import annotations

import subprocess
import sys


def run_cli(*args, timeout: float = 600, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgemerge.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)
