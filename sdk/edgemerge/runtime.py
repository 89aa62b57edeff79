"""Python face of the C runtime: `Runtime("merged.emm").run("fashion", x)`."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgemerge.emm.constants import Op, Status
from edgemerge.errors import EdgemergeError, EmmFormatError, RuntimeStatusError
from edgemerge.inputs import check_input_array
from edgemerge.text import printable

try:
    from edgemerge import _runtime
except ImportError as exc:  # pragma: no cover - only when the package was not built
    _runtime = None
    _IMPORT_ERROR = exc


@dataclass(frozen=True)
class TaskInfo:
    index: int
    name: str
    input_index: int
    input_shape: tuple[int, int, int]
    classes: int


def _require_runtime():
    if _runtime is None:
        raise EdgemergeError(f"the C runtime module edgemerge._runtime is not built ({_IMPORT_ERROR}); "
                             "install the package with `pip install .`")
    return _runtime


class Runtime:
    """A loaded `.emm` model. Thread-safe: every call runs in its own context, with the GIL released."""

    def __init__(self, source: str | os.PathLike | bytes):
        rt = _require_runtime()
        if isinstance(source, (str, os.PathLike)):
            self.path: Path | None = Path(source)
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                raise EmmFormatError(f"{printable(source)}: no such file") from None
            except OSError as e:
                raise EmmFormatError(f"{printable(source)}: cannot read ({e.strerror})") from None
        else:
            self.path, data = None, bytes(source)
        try:
            self._model = rt.Model(data)
        except rt.StatusError as e:
            status, message = e.args
            where = f"{printable(self.path)}: " if self.path else ""
            raise EmmFormatError(f"{where}{message}", status=status) from None
        self.tasks = [TaskInfo(i, t["name"], t["input_index"], tuple(t["input_shape"]), t["classes"])
                      for i, t in enumerate(self._model.tasks())]

    # -- description ----------------------------------------------------------------------------
    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def format_version(self) -> int:
        return self._model.format_version

    @property
    def context_bytes(self) -> int:
        """Caller memory one run context needs: activations, scratch and bookkeeping (peak run-time bytes)."""
        return self._model.context_bytes

    def nodes(self) -> list[dict]:
        out = self._model.nodes()
        for n in out:
            n["op_name"] = Op(n["op"]).name
        return out

    def task(self, task: str | int) -> TaskInfo:
        if isinstance(task, (int, np.integer)):
            if not 0 <= task < len(self.tasks):
                raise EdgemergeError(f"task index {task} out of range (model has {len(self.tasks)} tasks)")
            return self.tasks[int(task)]
        for t in self.tasks:
            if t.name == task:
                return t
        raise EdgemergeError(f"no task named {printable(task)!r}; the model has: "
                             f"{', '.join(map(printable, self.task_names))}")

    # -- running --------------------------------------------------------------------------------
    def run(self, task: str | int, x: np.ndarray) -> np.ndarray:
        """Logits of `task` for a float32 NHWC batch `x` ([N, H, W, C], or one [H, W, C] sample)."""
        info = self.task(task)
        x = np.asarray(x)
        if x.ndim not in (3, 4) or tuple(x.shape[-3:]) != info.input_shape:
            raise EdgemergeError(f"task {printable(info.name)!r} expects input of shape "
                                 f"(N, {', '.join(map(str, info.input_shape))}), got {tuple(x.shape)}")
        x = check_input_array(x, f"Runtime.run({printable(info.name)!r}): x")
        try:
            return self._model.run(info.index, x)
        except _runtime.StatusError as e:
            raise RuntimeStatusError(*e.args) from None

    def predict(self, task: str | int, x: np.ndarray) -> np.ndarray:
        return np.argmax(self.run(task, x), axis=-1)

    def run_all(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[int]]:
        """Runs every task once per sample, each node once (a trunk shared by tasks that read the same
        input runs once). `inputs` maps a task name to its batch (tasks sharing an input may give either).
        Returns (logits by task name, how many times each node ran)."""
        n_inputs = 1 + max(t.input_index for t in self.tasks)
        arrays: list[np.ndarray | None] = [None] * n_inputs
        for name, x in inputs.items():
            arrays[self.task(name).input_index] = check_input_array(x, f"Runtime.run_all: x of {printable(name)!r}")
        missing = [t.name for t in self.tasks if arrays[t.input_index] is None]
        if missing:
            raise EdgemergeError(f"run_all needs an input for task(s) {', '.join(missing)}")
        try:
            outputs, node_runs = self._model.run_all(arrays)
        except _runtime.StatusError as e:
            raise RuntimeStatusError(*e.args) from None
        except ValueError as e:
            raise EdgemergeError(str(e)) from None
        return {t.name: outputs[t.index] for t in self.tasks}, list(node_runs)


def status_name(status: int) -> str:
    return Status(status).name.lower().replace("_", " ")
