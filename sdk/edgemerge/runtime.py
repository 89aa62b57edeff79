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


def _model_property(name: str, doc: str) -> property:
    """A read-only attribute of the loaded C model."""
    return property(lambda self: getattr(self._model, name), doc=doc)


def _call(fn, *args, value_errors: bool = True):
    """Calls the C module, its errors as edgemerge's: a run's status as RuntimeStatusError, a refused
    argument (ValueError) as EdgemergeError when `value_errors`."""
    try:
        return fn(*args)
    except _runtime.StatusError as e:
        raise RuntimeStatusError(*e.args) from None
    except ValueError as e:
        if not value_errors:
            raise
        raise EdgemergeError(str(e)) from None


class Runtime:
    """A loaded `.emm` model. Thread-safe: every call runs in its own context, with the GIL released."""

    def __init__(self, source: str | os.PathLike | bytes, *, kernels: str = "auto", run_groups: bool = True,
                 threads: int = 1):
        """`kernels`: the kernel set ("auto", "ref", ... `_runtime.kernel_sets()`); `run_groups=False` makes
        run_all run every node alone (no run groups), for comparisons. `threads` > 1: run_all / bench_all run
        the tasks' own nodes (their lanes) in parallel on a pool of that many workers made once here (the
        model is planned with EM_LOAD_PARALLEL_TASKS, without run groups); outputs have the same bits for
        every thread count."""
        if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 64:
            raise ValueError(f"threads must be a whole number in 1..64, got {threads!r}")
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
            self._model = rt.Model(data, kernels, run_groups, threads)
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

    format_version = _model_property("format_version", "The .emm format version of the file.")
    context_bytes = _model_property(
        "context_bytes", "Caller memory one run context needs: activations, scratch and bookkeeping (peak run-time bytes).")
    kernels = _model_property("kernels", 'The kernel set the model runs ("auto" resolved).')
    threads = _model_property("threads", "Workers of the model's pool (1: serial).")
    task_lanes = _model_property("task_lanes", "Task lanes run_all runs in parallel (0: the serial plan).")
    file_bytes = _model_property("file_bytes", "Bytes of the .emm image the runtime reads (in place).")
    packed_bytes = _model_property(
        "packed_bytes", "Bytes allocated at load for kernel data derived from the file (decoded weights of LUT layers "
                        "run decoded, unpacked indices): model memory beyond the file.")

    @property
    def input_count(self) -> int:
        """Graph inputs of the model (tasks reading the same input share one)."""
        return 1 + max(t.input_index for t in self.tasks)

    @property
    def arena_bytes(self) -> int:
        """Peak activation memory of a run (values reused by liveness across branches); part of context_bytes."""
        return self._model.arena_bytes

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
        return _call(self._model.run, info.index, x, value_errors=False)

    def predict(self, task: str | int, x: np.ndarray) -> np.ndarray:
        return np.argmax(self.run(task, x), axis=-1)

    def run_all(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[int]]:
        """Runs every task once per sample, each node once (a trunk shared by tasks that read the same
        input runs once). `inputs` maps a task name to its batch (tasks sharing an input may give either).
        Returns (logits by task name, how many times each node ran)."""
        arrays: list[np.ndarray | None] = [None] * self.input_count
        for name, x in inputs.items():
            arrays[self.task(name).input_index] = check_input_array(x, f"Runtime.run_all: x of {printable(name)!r}")
        missing = [t.name for t in self.tasks if arrays[t.input_index] is None]
        if missing:
            raise EdgemergeError(f"run_all needs an input for task(s) {', '.join(missing)}")
        outputs, node_runs = _call(self._model.run_all, arrays)
        return {t.name: outputs[t.index] for t in self.tasks}, list(node_runs)


    # -- timing (measure/latency.py builds on these) ----------------------------------------------
    def bench_all(self, inputs: list[np.ndarray], warmup: int = 0, runs: int = 1) -> np.ndarray:
        """Nanoseconds of each of `runs` em_run_all calls (after `warmup` untimed ones), timed in C around the
        call alone with the GIL released; run k reads sample k % N of every input. `inputs`: one float32
        [N, H, W, C] array per graph input (`input_count`)."""
        return _call(self._model.bench_all, [np.ascontiguousarray(x, np.float32) for x in inputs], warmup, runs)

    def profile_all(self, inputs: list[np.ndarray], warmup: int = 0, runs: int = 1) -> list[dict]:
        """Per node, in node order: runs, total_ns, table_ns, accumulate_ns of `runs` em_run_all calls made with
        the C profiling API on (inputs as for `bench_all`)."""
        return list(_call(self._model.profile_all, [np.ascontiguousarray(x, np.float32) for x in inputs],
                          warmup, runs))


def status_name(status: int) -> str:
    return Status(status).name.lower().replace("_", " ")
