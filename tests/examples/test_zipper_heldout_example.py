"""The held-out zipper example (examples/zipper_heldout/run.py): its voice labels, replayed from the words data
set's recorded configuration, and its whole pipeline on a quick run (two small same-architecture models trained
for one epoch, zipper --share block with a few calibration steps per round, pick, eval and bench through the CLI).

No accuracy or timing is asserted on the quick run (speed and accuracy are reported by the example itself, in
examples/zipper_heldout/README.md); what is checked is that every step ran on the real files and agrees with
the rest: the picked file is one of the rounds, eval's figures are the C runtime's on the test files, bench's
JSON has the documented keys."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from examples.fashion_words import data as fw_data  # noqa: E402
from examples.zipper_heldout import run as zh  # noqa: E402


def _words_manifest(folder: Path, clips_per_word: int) -> tuple[dict, list[dict]]:
    """A words data set's manifest and files as data.make_words would write them, without synthesising audio
    (the spectrograms are random: only the labels matter here)."""
    config = {**fw_data.WORDS_CONFIG, "clips_per_word": clips_per_word, "seed": 7, "espeak_ng": "test"}
    params = fw_data.draw_clip_params(config, config["seed"])
    y = np.array([p["label"] for p in params], dtype=np.int64)
    train, test = fw_data.stratified_split(y, config["test_fraction"], config["seed"] + 1)
    rng = np.random.default_rng(0)
    for split, idx in (("train", train), ("test", test)):
        np.savez(folder / f"words_{split}.npz", x=rng.normal(size=(len(idx), 32, 32, 1)).astype(np.float32),
                 y=y[idx])
    (folder / fw_data.MANIFEST_NAME).write_text(json.dumps({"words": {"config": config, "outputs": {}}}))
    return config, params


def test_voice_labels_replay_the_clips_voices(tmp_path):
    config, params = _words_manifest(tmp_path, clips_per_word=40)
    labels = zh.voice_labels(tmp_path)
    y = np.array([p["label"] for p in params])
    train, test = fw_data.stratified_split(y, config["test_fraction"], config["seed"] + 1)
    for split, idx in (("train", train), ("test", test)):
        want = [int(params[i]["voice"].partition("+")[2] in ("f1", "f2", "f3", "f4", "Annie", "steph", "grandma"))
                for i in idx]
        assert labels[split].tolist() == want
    share = np.concatenate(list(labels.values())).mean()
    assert 0.2 < share < 0.45           # 7 of the 22 variants are female


def test_female_voice_reads_the_variant_not_the_language():
    assert zh.female_voice("en-gb+f3") and zh.female_voice("de+Annie")
    assert not zh.female_voice("en-us") and not zh.female_voice("fi+klatt") and not zh.female_voice("en-us+m2")
    assert not zh.female_voice("fr-fr+grandpa")


def test_voice_labels_refuse_files_that_do_not_match_the_manifest(tmp_path):
    _words_manifest(tmp_path, clips_per_word=20)
    with np.load(tmp_path / "words_test.npz") as npz:
        x, y = npz["x"], npz["y"]
    np.savez(tmp_path / "words_test.npz", x=x, y=np.roll(y, 1))
    with pytest.raises(ValueError, match="labels differ"):
        zh.voice_labels(tmp_path)


def test_voice_labels_need_a_recorded_words_data_set(tmp_path):
    with pytest.raises(FileNotFoundError, match="no words data set recorded"):
        zh.voice_labels(tmp_path)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    import model_factory

    pair = tmp_path_factory.mktemp("zh_pair")
    x_train, y_train, x_test, y_test = model_factory.fashion_mnist()
    pad = lambda x: np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))  # noqa: E731  28×28 → 32×32
    n_train, n_test = 768, 256
    for split, x, y, n in (("train", x_train, y_train, n_train), ("test", x_test, y_test, n_test)):
        x = pad(x[:n]).astype(np.float32)
        np.savez(pair / f"word_{split}.npz", x=x, y=y[:n])
        np.savez(pair / f"voice_{split}.npz", x=x, y=(y[:n] >= 5).astype(np.int64))   # a 2-class task
    out = tmp_path_factory.mktemp("zh_out")
    # its own process, as a user runs it (the script sets TensorFlow's thread counts before TensorFlow runs)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "examples.zipper_heldout.run", "--pair", str(pair), "--out", str(out),
                           "--epochs", "1", "--steps-per-round", "5", "--max-drop", "0.99", "--runs", "10"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"summary": json.loads((out / "zipper_heldout_summary.json").read_text()), "out": out, "pair": pair,
            "stdout": done.stdout}


def test_quick_run_zippers_every_block_and_picks_the_deepest_within_budget(quick_run):
    s = quick_run["summary"]
    assert s["depth"] == len(zh.BLOCKS) and [r["k"] for r in s["rounds"]] == list(range(len(zh.BLOCKS) + 1))
    # --max-drop 0.99 admits every round: pick takes the deepest
    assert s["picked_k"] == len(zh.BLOCKS)
    for t in zh.TASKS:
        m = s["models"][t]
        assert m["tflite_top1_agreement"] >= 0.99
        assert (quick_run["out"] / f"mobilenet_{t}.keras").is_file()
    assert f"picked k={len(zh.BLOCKS)}" in quick_run["stdout"]


def test_quick_run_models_differ_in_heads_and_share_the_starting_trunk_architecture(quick_run):
    a = keras.models.load_model(quick_run["out"] / "mobilenet_word.keras")
    b = keras.models.load_model(quick_run["out"] / "mobilenet_voice.keras")
    trunk = [l.name for l in a.layers if l.name.startswith(zh.TRUNK_PREFIXES)]
    assert trunk == [l.name for l in b.layers if l.name.startswith(zh.TRUNK_PREFIXES)]
    assert a.output_shape[-1] == 10 and b.output_shape[-1] == 2
    assert "fc" in [l.name for l in b.layers] and "fc" not in [l.name for l in a.layers]


def test_quick_run_eval_is_the_c_runtime_on_the_test_files(quick_run):
    from edgemerge.runtime import Runtime

    s, out, pair = quick_run["summary"], quick_run["out"], quick_run["pair"]
    runtime = Runtime(out / "picked.emm")
    for t in zh.TASKS:
        with np.load(pair / f"{t}_test.npz") as npz:
            x, y = npz["x"], npz["y"]
        accuracy = float(np.mean(runtime.run(t, x).argmax(axis=1) == y))
        r = s["eval"][t]
        assert r["n"] == len(y) and r["accuracy"] == pytest.approx(accuracy)
        assert r["drop"] == pytest.approx(r["reference_accuracy"] - r["accuracy"])
        assert r["accuracy"] == pytest.approx(s["rounds"][s["picked_k"]]["accuracy"][t])


def test_quick_run_bench_json(quick_run):
    bench = json.loads((quick_run["out"] / "bench_picked.json").read_text())
    assert set(bench["tasks"]) == set(zh.TASKS) and bench["threads"] == 1 and bench["runs"] == 10
    for side in ("merged_ms", "reference_ms"):
        assert 0 < bench[side]["min"] <= bench[side]["median"] <= bench[side]["p95"]
    assert bench["speedup"] == pytest.approx(bench["reference_ms"]["median"] / bench["merged_ms"]["median"])
    assert quick_run["summary"]["bench"]["speedup"] == pytest.approx(bench["speedup"])


def test_the_example_draws_its_own_larger_words_set():
    # the bundled example's configuration is unchanged; the held-out pair's is another draw, 2,500 clips a word
    bundled = fw_data.words_config(0)
    held_out = fw_data.words_config(zh.WORDS_SEED, zh.CLIPS_PER_WORD)
    assert bundled["clips_per_word"] == fw_data.WORDS_CONFIG["clips_per_word"] == 700
    assert held_out["clips_per_word"] == 2500 and held_out["seed"] != bundled["seed"]
    assert {k: v for k, v in held_out.items() if k not in ("clips_per_word", "seed")} == \
        {k: v for k, v in bundled.items() if k not in ("clips_per_word", "seed")}
