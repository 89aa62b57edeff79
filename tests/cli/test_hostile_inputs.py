"""No traceback from any CLI command on any input (issue 19 part 1).

Every command of `edgemerge --help` runs over a corpus of hostile inputs: missing, empty and folder paths, FIFOs,
corrupt `.emm` files (tests/corrupt.py and runtime_c/fuzz/corpus), a `.npy` named `.npz`, `.npz` files with strings,
complex numbers, NaN, Inf, uint8, one-hot labels, empty arrays and wrong shapes, Keras files with a Lambda layer,
TFLite files with out-of-range tensor indices, odd-length weight buffers and a 3000-op chain, names with ESC/CR/LF,
and output targets that are folders, FIFOs, symlinks to FIFOs or inside /proc. A case fails on a traceback, on an
error that is not one `error:` line (exit 1) or a usage message (exit 2), on an "unexpected" error (the CLI's last
line of defence: a bug), on a signal, or on a hang.

Speed: the cases run in-process through click's CliRunner, in a few worker processes (one of them for the
cases that import TensorFlow); the worker's 300 s limit is a hang detector, not a timing race.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tflite_craft
from corrupt import CORRUPTIONS
from graphs import lut_conv_graph, two_task_graph

from edgemerge import emm
from edgemerge.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]
FUZZ_CORPUS = ROOT / "runtime_c" / "fuzz" / "corpus"
HANG_LIMIT_S = 300

# runs a list of cases in-process; prints one JSON line per case (the id first, so a hang names its case)
_WORKER = textwrap.dedent("""
    import json, os, sys, traceback
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from click.testing import CliRunner
    from edgemerge.cli import main
    cases = json.load(sys.stdin)
    for case in cases:
        print(json.dumps({"started": case["id"]}), flush=True)
        result = CliRunner().invoke(main, case["args"], catch_exceptions=True)
        escaped = result.exception if not isinstance(result.exception, SystemExit) else None
        print(json.dumps({"id": case["id"], "code": result.exit_code, "stderr": result.stderr,
                          "stdout": result.stdout[-2000:],
                          "exception": "".join(traceback.format_exception(escaped)) if escaped else None}),
              flush=True)
""")


def _emm_corpus(folder: Path) -> dict[str, Path]:
    """Corrupt and odd .emm files: tests/corrupt.py's cases, the fuzz corpus, a valid file with hostile names."""
    out = {}
    valid = emm.to_bytes(lut_conv_graph())
    for name, (corrupt, _) in CORRUPTIONS.items():
        out[f"corrupt-{name}"] = folder / f"{name}.emm"
        out[f"corrupt-{name}"].write_bytes(corrupt(valid))
    for p in sorted(FUZZ_CORPUS.iterdir()):
        out[f"fuzz-{p.stem}"] = p
    graph = two_task_graph()
    graph.nodes[0].name = "evil\x1b[2J\r\nerror: forged line"
    out["hostile-names"] = folder / "hostile.emm"
    emm.write_emm(graph, out["hostile-names"])
    out["empty"] = folder / "empty.emm"
    out["empty"].write_bytes(b"")
    out["text"] = folder / "text.emm"
    out["text"].write_text("not a model\n")
    out["folder"] = folder / "folder.emm"
    out["folder"].mkdir()
    out["missing"] = folder / "missing.emm"
    out["fifo"] = folder / "fifo.emm"
    os.mkfifo(out["fifo"])
    return out


def _data_corpus(folder: Path, shape=(9, 7, 5)) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, *shape)).astype(np.float32)
    y = np.array([0, 1, 2, 3])
    arrays = {
        "strings": dict(x=np.full((4, *shape), "a"), y=y),
        "complex": dict(x=x.astype(np.complex64), y=y),
        "nan": dict(x=np.where(rng.random(x.shape) < 0.1, np.nan, x).astype(np.float32), y=y),
        "inf": dict(x=np.where(rng.random(x.shape) < 0.1, np.inf, x).astype(np.float32), y=y),
        "uint8": dict(x=(rng.random(x.shape) * 255).astype(np.uint8), y=y),
        "one-hot": dict(x=x, y=np.eye(6)[y]),
        "float-labels": dict(x=x, y=y.astype(np.float32)),
        "empty": dict(x=np.zeros((0, *shape), np.float32), y=np.zeros(0, np.int64)),
        "wrong-rank": dict(x=x[:, 0], y=y),
        "wrong-shape": dict(x=np.zeros((4, 3, 3, 1), np.float32), y=y),
        "label-count": dict(x=x, y=y[:2]),
        "no-y": dict(x=x),
        "bool": dict(x=x > 0, y=y),
        "objects": None,
    }
    out = {}
    for name, content in arrays.items():
        path = folder / f"{name}.npz"
        if content is None:   # an object array: refused by allow_pickle=False
            with open(path, "wb") as f:
                np.savez(f, x=np.array([object()] * 4, dtype=object), y=y, allow_pickle=True)
        else:
            np.savez(path, **content)
        out[name] = path
    out["npy-named-npz"] = folder / "array.npz"
    with open(out["npy-named-npz"], "wb") as f:
        np.save(f, x)
    out["empty-file"] = folder / "empty-file.npz"
    out["empty-file"].write_bytes(b"")
    out["truncated"] = folder / "truncated.npz"
    np.savez(folder / "whole.npz", x=x, y=y)
    out["truncated"].write_bytes((folder / "whole.npz").read_bytes()[:200])
    out["folder"] = folder / "dir.npz"
    out["folder"].mkdir()
    out["fifo"] = folder / "fifo.npz"
    os.mkfifo(out["fifo"])
    out["missing"] = folder / "missing.npz"
    out["hostile-name"] = folder / "evil\x1b[2J\nname.npz"
    np.savez(out["hostile-name"], x=x.astype(np.uint8), y=y)
    return out


def _tflite_corpus(folder: Path) -> dict[str, Path]:
    files = {"oob-index": tflite_craft.dense_model(bad_tensor_index=1000),
             "odd-buffer": tflite_craft.dense_model(weight_bytes_cut=1),
             "chain-3000": tflite_craft.dense_model(helper_chain=3000),
             "hostile-tensor-name": tflite_craft.dense_model(tensor_name="x\x1b[31m\r\nerror: forged",
                                                             weight_bytes_cut=2),
             "garbage": b"TFL3" * 10}
    out = {}
    for name, data in files.items():
        out[name] = folder / f"{name}.tflite"
        out[name].write_bytes(data)
    return out


def _targets(folder: Path) -> dict[str, Path]:
    out = {"folder": folder / "out-dir", "fifo": folder / "out-fifo", "symlink-to-fifo": folder / "out-link",
           "proc": Path("/proc/edgemerge-no-such-dir/x.emm"), "missing-folder": folder / "no" / "such" / "x.emm"}
    out["folder"].mkdir()
    os.mkfifo(out["fifo"])
    out["symlink-to-fifo"].symlink_to(out["fifo"])
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    for sub in ("emm", "data", "tflite", "targets", "work"):
        (base / sub).mkdir()
    valid = base / "valid.emm"
    emm.write_emm(lut_conv_graph(), valid)
    return {"emm": _emm_corpus(base / "emm"), "data": _data_corpus(base / "data"),
            "tflite": _tflite_corpus(base / "tflite"), "targets": _targets(base / "targets"),
            "valid": valid, "work": base / "work", "base": base}


def _lambda_keras(folder: Path) -> Path:
    """A .keras file with a Lambda layer (made in a subprocess: TensorFlow stays out of the test process)."""
    path = folder / "lambda.keras"
    code = ("import sys, keras\n"
            "i = keras.Input((9, 7, 5)); x = keras.layers.Lambda(lambda t: t * 2)(i)\n"
            "x = keras.layers.Flatten()(x); o = keras.layers.Dense(3)(x)\n"
            "keras.Model(i, o).save(sys.argv[1])\n")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=600, capture_output=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return path


def _cases(c) -> tuple[list[dict], list[dict]]:
    """(cases without TensorFlow, cases that import it)."""
    valid, work, targets = str(c["valid"]), c["work"], c["targets"]
    light, heavy = [], []

    def add(group, cid, *args):
        group.append({"id": cid, "args": [str(a) for a in args]})

    for name, path in c["emm"].items():
        add(light, f"inspect/{name}", "inspect", path)
        add(light, f"inspect-json/{name}", "inspect", path, "--json")
        add(light, f"eval/{name}", "eval", path, "--data", f"t0={c['data']['nan']}")
        add(light, f"bench/{name}", "bench", path, "--vs", f"t0={c['tflite']['odd-buffer']}", "--runs", 1,
            "--warmup", 0)
        add(light, f"export-c/{name}", "export-c", path, "-o", work / f"{name}.h")
        add(light, f"flash/{name}", "flash", path, "--to", f"dir:{work / 'card'}")
    for name, path in c["data"].items():
        add(light, f"eval-data/{name}", "eval", valid, "--data", f"t0={path}")
        add(light, f"bench-data/{name}", "bench", valid, "--vs", f"t0={c['tflite']['odd-buffer']}",
            "--data", f"t0={path}", "--runs", 1, "--warmup", 0)
        add(light, f"merge-calib/{name}", "merge", f"a={c['tflite']['odd-buffer']}", f"b={c['tflite']['oob-index']}",
            "--calib", f"a={path}", "--calib", f"b={path}", "-o", work / "m.emm")
        add(light, f"zipper-calib/{name}", "zipper", f"a={c['tflite']['odd-buffer']}",
            f"b={c['tflite']['garbage']}", "--calib", f"a={path}", "--calib", f"b={path}",
            "--val", f"a={path}", "--val", f"b={path}", "-o", work / "zipped")
    tfl = c["tflite"]
    for name, path in tfl.items():
        add(light, f"merge-tflite/{name}", "merge", f"a={path}", f"b={path}", "-o", work / f"{name}.emm")
        add(light, f"convert-tflite/{name}", "convert", path, "-o", work / f"{name}-converted.emm")
        add(light, f"eval-reference/{name}", "eval", valid, "--data", f"t0={c['data']['one-hot']}",
            "--reference", f"t0={path}")
    for name, target in targets.items():
        add(light, f"merge-to/{name}", "merge", f"a={tfl['chain-3000']}", f"b={tfl['chain-3000']}", "-o", target)
        add(light, f"convert-to/{name}", "convert", tfl["chain-3000"], "-o", target)
        add(light, f"export-c-to/{name}", "export-c", valid, "-o", target)
        add(light, f"zipper-pick-to/{name}", "zipper", "pick", work, "--max-drop", 0.1, "-o", target)
        add(light, f"flash-to/{name}", "flash", valid, "--to", f"dir:{target}")
    add(light, "merge/missing-model", "merge", f"a={work / 'nope.keras'}", f"b={work / 'nope.keras'}", "-o",
        work / "x.emm")
    add(light, "convert/missing-model", "convert", work / "nope.keras", "-o", work / "x.emm")
    add(light, "convert/folder-model", "convert", work, "-o", work / "x.emm")
    add(light, "convert/fifo-model", "convert", targets["fifo"], "-o", work / "x.emm")
    add(light, "convert/emm-model", "convert", valid, "-o", work / "x.emm")
    add(light, "convert/bad-task", "convert", tfl["chain-3000"], "-o", work / "x.emm", "--task", "a\x1b[2Jb")
    add(light, "merge/one-model", "merge", f"a={tfl['chain-3000']}", "-o", work / "x.emm")
    add(light, "merge/bad-pair", "merge", "no-equals-sign", "b=x", "-o", work / "x.emm")
    add(light, "merge/folder-model", "merge", f"a={work}", f"b={work}", "-o", work / "x.emm")
    add(light, "merge/fifo-model", "merge", f"a={targets['fifo']}", f"b={targets['fifo']}", "-o", work / "x.emm")
    add(light, "export-c/keyword-name", "export-c", valid, "-o", work / "int.h")
    add(light, "export-c/huge-align", "export-c", valid, "-o", work / "ok.h", "--align", 1 << 40)
    add(light, "export-c/bad-name", "export-c", valid, "-o", work / "ok.h", "--name", "a\x1b[2Jb")
    add(light, "zipper-pick/missing", "zipper", "pick", work / "nope", "--max-drop", 0.1, "-o", work / "p.emm")
    (work / "zipped-bad").mkdir(exist_ok=True)
    (work / "zipped-bad" / "report.json").write_text("{not json")
    add(light, "zipper-pick/bad-report", "zipper", "pick", work / "zipped-bad", "--max-drop", 0.1, "-o",
        work / "p.emm")
    add(light, "zipper-pick/folder-as-folder", "zipper", "pick", targets["fifo"], "--max-drop", 0.1, "-o",
        work / "p.emm")
    add(light, "build/unknown-board", "build", "--board", "no-such-board\x1b[2J")
    add(light, "boards", "boards")
    add(light, "flash/unknown-target", "flash", valid, "--to", "ftp://x/y")
    add(light, "flash/unknown-board", "flash", valid, "--board", "nope", "--to", f"dir:{work / 'card'}")
    add(light, "flash/star-name", "flash", valid, "--to", f"dir:{work / 'card'}", "--name", "*")
    add(light, "flash/slash-name", "flash", valid, "--to", f"dir:{work / 'card'}", "--name", "../x")
    add(light, "inspect/dev-null", "inspect", "/dev/null")
    add(light, "help", "--help")
    add(light, "unknown-command", "no-such-command")

    lam = str(c["lambda"])
    add(heavy, "merge/lambda-keras", "merge", f"a={lam}", f"b={lam}", "-o", work / "lambda.emm")
    add(heavy, "eval/lambda-reference", "eval", valid, "--data", f"t0={c['data']['label-count']}", "--reference",
        f"t0={lam}")
    add(heavy, "convert/lambda-keras", "convert", lam, "-o", work / "lambda-converted.emm")
    (work / "text.keras").write_text("not a keras file")
    add(heavy, "convert/text-keras", "convert", work / "text.keras", "-o", work / "t.emm")
    add(heavy, "merge/text-keras", "merge", f"a={work / 'text.keras'}", f"b={lam}", "-o", work / "t.emm")
    add(heavy, "zipper/lambda", "zipper", f"a={lam}", f"b={lam}", "--calib", f"a={c['data']['label-count']}",
        "--calib", f"b={c['data']['label-count']}", "--val", f"a={c['data']['label-count']}",
        "--val", f"b={c['data']['label-count']}", "-o", work / "zipped-lambda", "--no-tflite")
    return light, heavy


def _run_worker(cases: list[dict]) -> list[dict]:
    proc = subprocess.Popen([sys.executable, "-c", _WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        stdout, stderr = proc.communicate(json.dumps(cases), timeout=HANG_LIMIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        started = [json.loads(line)["started"] for line in stdout.splitlines() if '"started"' in line]
        pytest.fail(f"hang: case {started[-1] if started else '?'} was still running after {HANG_LIMIT_S} s")
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    results = [r for r in lines if "id" in r]
    if proc.returncode != 0:
        started = [r["started"] for r in lines if "started" in r]
        pytest.fail(f"worker died (exit {proc.returncode}, a signal if negative) during case "
                    f"{started[-1] if started else '?'}: {stderr[-3000:]}")
    return results


def _problems(result: dict) -> str | None:
    err, code = result["stderr"], result["code"]
    if result["exception"]:
        return f"traceback:\n{result['exception']}"
    if "Traceback" in err:
        return f"traceback in stderr:\n{err}"
    if code < 0:
        return f"signal {-code}"
    if "error: unexpected" in err:
        return f"an unexpected error (a bug caught by the last line of defence): {err}"
    if "\r" in err:
        return f"a raw CR reached stderr: {err!r}"
    if "\x1b" in err or "\x1b" in result["stdout"]:
        return f"an ESC byte reached the terminal: {err!r}"
    if "\r" in result["stdout"] or any(line.startswith("error: forged") for line in result["stdout"].splitlines()):
        return f"a name from a file forged a line on stdout: {result['stdout']!r}"
    if code == 1:
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        if len(errors) != 1 or not err.rstrip("\n").splitlines()[-1].startswith("error: "):
            return f"exit 1 without exactly one final `error:` line: {err!r}"
    elif code == 2:
        if "Usage:" not in err:
            return f"exit 2 without a usage message: {err!r}"
    elif code != 0:
        return f"exit {code}: {err!r}"
    return None


def test_no_traceback_signal_or_hang_from_any_command_on_hostile_inputs(corpus):
    with ThreadPoolExecutor(1) as pool:   # the Keras file is made while the light cases run
        lam = pool.submit(_lambda_keras, corpus["base"])
        light, _ = _cases({**corpus, "lambda": corpus["base"] / "lambda.keras"})
        halves = [light[0::2], light[1::2]]
        with ThreadPoolExecutor(2) as workers:
            light_results = [r for part in workers.map(_run_worker, halves) for r in part]
        corpus_with_lambda = {**corpus, "lambda": lam.result()}
    _, heavy = _cases(corpus_with_lambda)
    results = light_results + _run_worker(heavy)

    assert len(results) == len(light) + len(heavy)
    problems = {r["id"]: p for r in results if (p := _problems(r))}
    assert not problems, "\n\n".join(f"{k}: {v}" for k, v in problems.items())
    by_id = {r["id"]: r for r in results}
    # what must be refused is refused (exit 1), naming the problem
    for cid, words in {
        "eval-data/nan": "NaN", "eval-data/inf": "Inf", "eval-data/uint8": "x/255",
        "eval-data/one-hot": "y.argmax(1)", "eval-data/npy-named-npz": ".npy", "eval-data/empty": "empty",
        "eval-data/strings": "dtype", "eval-data/complex": "complex", "merge-calib/nan": "NaN",
        "zipper-calib/nan": "NaN", "bench-data/inf": "Inf", "merge-tflite/oob-index": "tensor 1000",
        "merge-tflite/odd-buffer": "not a multiple", "export-c/keyword-name": "'int'",
        "export-c/huge-align": "power of two", "merge-to/fifo": "FIFO", "export-c-to/symlink-to-fifo": "FIFO",
        "flash-to/fifo": "", "merge/missing-model": "no such file", "merge/lambda-keras": "lambda.keras",
    }.items():
        assert by_id[cid]["code"] == 1 and words in by_id[cid]["stderr"], (cid, by_id[cid]["stderr"])
    # nothing was written where it must not be
    assert corpus["targets"]["fifo"].exists() and not corpus["targets"]["fifo"].is_file()
    # (flash --to dir:FOLDER installs into it: the one file there is flash's, no output replaced the folder)
    assert corpus["targets"]["folder"].is_dir()
    assert [p.name for p in corpus["targets"]["folder"].iterdir()] == ["valid.emm"]


def test_a_missing_model_is_reported_before_tensorflow_loads(tmp_path, corpus):
    code = ("import sys; from click.testing import CliRunner; from edgemerge.cli import main\n"
            "r = CliRunner().invoke(main, sys.argv[1:])\n"
            "print(r.exit_code, 'tensorflow' in sys.modules, r.stderr.strip())\n")
    for args in (["merge", f"a={tmp_path / 'a.keras'}", f"b={tmp_path / 'b.keras'}", "-o", str(tmp_path / "m.emm")],
                 ["merge", f"a={tmp_path / 'a.keras'}", f"b={tmp_path / 'b.keras'}", "--calib",
                  f"a={corpus['data']['uint8']}", "-o", str(tmp_path / "m.emm")],
                 ["eval", str(corpus["valid"]), "--data", f"t0={corpus['data']['nan']}", "--reference",
                  f"t0={tmp_path / 'a.keras'}"]):
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)
        code_, tf_loaded, message = out.stdout.split(" ", 2)
        assert code_ == "1" and tf_loaded == "False", (args, out.stdout, out.stderr)


def test_cli_runner_sees_the_same_one_line_errors_in_process(corpus):
    from click.testing import CliRunner
    r = CliRunner().invoke(cli_main, ["eval", str(corpus["valid"]), "--data", f"t0={corpus['data']['one-hot']}"])
    assert r.exit_code == 1
    assert r.stderr.strip() == (f"error: data file {corpus['data']['one-hot']}: y looks one-hot (4, 6): give "
                                "integer labels, e.g. y.argmax(1)")
