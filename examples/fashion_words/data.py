"""Data sets of the bundled example, built offline and deterministically from Debian packages.

- Fashion-MNIST, from the IDX files of `dataset-fashion-mnist`, padded from 28×28 to the paper's 32×32.
- Spoken words, synthesised with `espeak-ng` (many voices, variants, speeds and pitches), with random
  background noise and time shift, turned into 32×32 log-mel spectrograms.

Every output is an `.npz` with `x` (float32, N×32×32×1) and `y` (int64 labels). A `data_manifest.json`
records each data set's configuration and a hash of its arrays; a data set whose files exist and whose
configuration is unchanged is not rebuilt.

    python -m examples.fashion_words.data --out examples/build
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import multiprocessing
import shutil
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

SETUP_HINT = "run the project's set-up first (`make setup`, i.e. `bash tools/setup.sh`)"
MANIFEST_NAME = "data_manifest.json"

# ---------------------------------------------------------------------------------------------------
# Fashion-MNIST
# ---------------------------------------------------------------------------------------------------

FASHION_PACKAGE = "dataset-fashion-mnist"
FASHION_DIRS = (Path("/usr/share/datasets/fashion-mnist"), Path("/usr/share/dataset-fashion-mnist"),
                Path("/usr/share/fashion-mnist"))
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_PAD = 2          # 28×28 → 32×32, the input size of the NeuralMerger paper's LeNet
FASHION_CONFIG = {"version": 1, "pad": FASHION_PAD, "scale": "uint8/255"}


def find_fashion_dir() -> Path:
    """The folder holding the four Fashion-MNIST IDX .gz files of the Debian package."""
    needed = [name for pair in FASHION_FILES.values() for name in pair]
    for folder in FASHION_DIRS:
        if all((folder / name).is_file() for name in needed):
            return folder
    # Not in a usual place: ask dpkg where the package put its files.
    try:
        listing = subprocess.run(["dpkg", "-L", FASHION_PACKAGE], capture_output=True, text=True,
                                 check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        listing = []
    for line in listing:
        path = Path(line.strip())
        if path.name == needed[0] and all((path.parent / name).is_file() for name in needed):
            return path.parent
    raise FileNotFoundError(f"Fashion-MNIST IDX files not found: the Debian package {FASHION_PACKAGE} "
                            f"seems not to be installed; {SETUP_HINT}")


def read_idx_gz(path: Path) -> np.ndarray:
    """Reads a gzipped IDX file (the MNIST format: big-endian magic, dimensions, then uint8 data)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    zero, dtype_code, ndim = raw[0] * 256 + raw[1], raw[2], raw[3]
    if zero != 0 or dtype_code != 0x08:       # 0x08: unsigned byte, the only type these files use
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {data.size} bytes of data for dimensions {tuple(dims)}")
    return data.reshape(tuple(dims))


def load_fashion_split(split: str, source_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One split of Fashion-MNIST: x float32 (N, 32, 32, 1) in [0, 1], y int64 (N,)."""
    source_dir = source_dir or find_fashion_dir()
    image_file, label_file = FASHION_FILES[split]
    images = read_idx_gz(source_dir / image_file)
    labels = read_idx_gz(source_dir / label_file)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise ValueError(f"{source_dir}: unexpected shapes {images.shape} / {labels.shape}")
    p = FASHION_PAD
    x = np.pad(images, ((0, 0), (p, p), (p, p))).astype(np.float32) / 255.0
    return x[..., None], labels.astype(np.int64)


def make_fashion(out_dir: str | Path) -> dict:
    """Writes fashion_train.npz and fashion_test.npz; returns their manifest entry."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source_dir = find_fashion_dir()
    outputs = {}
    for split in ("train", "test"):
        x, y = load_fashion_split(split, source_dir)
        name = f"fashion_{split}.npz"
        save_npz(out_dir / name, x, y)
        outputs[name] = describe_arrays(x, y)
    return {"config": FASHION_CONFIG, "source": str(source_dir), "outputs": outputs}


# ---------------------------------------------------------------------------------------------------
# Spoken words (espeak-ng)
# ---------------------------------------------------------------------------------------------------

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")

# English voices carry most of the data; voices of other languages reading the same English words give
# strong accents, i.e. more speaker variety.
ENGLISH_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
                  "en-us-nyc", "en-029")
OTHER_VOICES = ("de", "nl", "sv", "da", "fr-fr", "es", "it", "pt-br", "pl", "fi")
ENGLISH_SHARE = 0.75
# Voice variants ("" = the voice's own). Whispering and the more extreme effect voices are left out:
# they would mostly add label noise to such short words.
VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4",
            "klatt", "klatt2", "klatt3", "Andy", "Annie", "steph", "quincy", "grandma", "grandpa", "Storm")

ESPEAK_RATE = 22050         # espeak-ng --stdout writes 16-bit mono PCM at this rate
SAMPLE_RATE = 16000
RESAMPLE_UP, RESAMPLE_DOWN = 320, 441      # 22050 · 320/441 = 16000
CLIP_SAMPLES = SAMPLE_RATE                 # fixed 1 s window

# Log-mel features: 32 frames of 1024-point FFTs whose centres are spread evenly over the 1 s clip
# (hop 500 samples, first centre at 250), and 32 mel bands.
N_FFT = 1024
HOP = CLIP_SAMPLES // 32
N_FRAMES = 32
N_MELS = 32
MEL_FMIN, MEL_FMAX = 40.0, SAMPLE_RATE / 2
LOG_FLOOR = 1e-6            # added to the mel power before the log: keeps silent frames finite

WORDS_CONFIG = {
    "version": 1,
    "words": list(WORDS),
    "clips_per_word": 700,
    "english_voices": list(ENGLISH_VOICES),
    "other_voices": list(OTHER_VOICES),
    "english_share": ENGLISH_SHARE,
    "variants": list(VARIANTS),
    "speed_wpm": [110, 230],
    "pitch": [15, 85],
    "gain_db": [-12.0, 0.0],
    "snr_db": [5.0, 30.0],
    "noise_colours": ["white", "pink", "brown"],
    "max_shift_s": 0.15,
    "sample_rate": SAMPLE_RATE,
    "n_fft": N_FFT, "hop": HOP, "frames": N_FRAMES, "mels": N_MELS, "fmin": MEL_FMIN, "fmax": MEL_FMAX,
    "log_floor": LOG_FLOOR,
    "test_fraction": 0.2,
}


def espeak_version() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise FileNotFoundError(f"espeak-ng not found; {SETUP_HINT}")
    return subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout.strip()


def draw_clip_params(config: dict, seed: int) -> list[dict]:
    """All random choices of the data set, drawn up front in one process so that the result does not
    depend on how the clips are spread over worker processes."""
    rng = np.random.default_rng(seed)
    params = []
    for label, word in enumerate(config["words"]):
        for _ in range(config["clips_per_word"]):
            english = rng.random() < config["english_share"]
            voices = config["english_voices"] if english else config["other_voices"]
            voice = str(voices[rng.integers(len(voices))])
            variant = str(config["variants"][rng.integers(len(config["variants"]))])
            params.append({
                "word": word,
                "label": label,
                "voice": voice + (f"+{variant}" if variant else ""),
                "speed": int(rng.integers(config["speed_wpm"][0], config["speed_wpm"][1] + 1)),
                "pitch": int(rng.integers(config["pitch"][0], config["pitch"][1] + 1)),
                "gain_db": float(rng.uniform(*config["gain_db"])),
                "snr_db": float(rng.uniform(*config["snr_db"])),
                "noise_colour": int(rng.integers(len(config["noise_colours"]))),  # spectral slope 1/f^k
                "shift": float(rng.uniform(-1.0, 1.0)),        # fraction of the allowed shift
                "noise_seed": int(rng.integers(2**63 - 1)),
            })
    return params


def synthesize(word: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng's rendering of `word` as float64 samples at ESPEAK_RATE in [-1, 1]."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word],
                         capture_output=True, check=True).stdout
    # The WAV header written to a pipe carries a placeholder length; the wave module ignores it and
    # reads to the end of the data, which is what we want.
    with wave.open(io.BytesIO(wav)) as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2 or w.getframerate() != ESPEAK_RATE:
            raise RuntimeError(f"espeak-ng produced an unexpected WAV format for voice {voice}")
        pcm = w.readframes(w.getnframes())
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0


def speech_extent(signal: np.ndarray, frame: int = 160, threshold_db: float = -35.0) -> tuple[int, int]:
    """First and one-past-last sample of the frames whose energy is within `threshold_db` of the loudest
    (espeak-ng pads words with silence, which would otherwise eat the 1 s window)."""
    n = len(signal) // frame
    energy = (signal[: n * frame].reshape(n, frame) ** 2).mean(axis=1)
    loud = np.flatnonzero(energy > energy.max() * 10 ** (threshold_db / 10))
    return int(loud[0]) * frame, int(loud[-1] + 1) * frame


def coloured_noise(rng: np.random.Generator, n: int, slope: int) -> np.ndarray:
    """Gaussian noise with power spectrum ∝ 1/f^slope (0 white, 1 pink, 2 brown), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1]                   # avoid dividing by zero at DC
    noise = np.fft.irfft(spectrum / freqs ** (slope / 2), n)
    return noise / np.sqrt(np.mean(noise ** 2))


def render_clip(p: dict, config: dict) -> np.ndarray:
    """One clip: speech placed in the 1 s window (centred, then shifted), at a random gain, plus noise."""
    speech = resample_poly(synthesize(p["word"], p["voice"], p["speed"], p["pitch"]), RESAMPLE_UP,
                           RESAMPLE_DOWN)
    start, stop = speech_extent(speech)
    speech = speech[start:stop]
    if len(speech) > CLIP_SAMPLES:        # very slow speech: keep the middle second
        cut = (len(speech) - CLIP_SAMPLES) // 2
        speech = speech[cut: cut + CLIP_SAMPLES]
    speech = speech / max(np.abs(speech).max(), 1e-9) * 10 ** (p["gain_db"] / 20)

    # Centre the word, then shift it by up to max_shift_s without letting it leave the window.
    slack = CLIP_SAMPLES - len(speech)
    max_shift = min(int(config["max_shift_s"] * SAMPLE_RATE), slack // 2)
    offset = slack // 2 + int(round(p["shift"] * max_shift))
    clip = np.zeros(CLIP_SAMPLES)
    clip[offset: offset + len(speech)] = speech

    # Noise power relative to the power of the speech itself (not of the whole, mostly silent, window).
    rng = np.random.default_rng(p["noise_seed"])
    speech_power = np.mean(speech ** 2)
    noise_rms = np.sqrt(speech_power / 10 ** (p["snr_db"] / 10))
    clip += noise_rms * coloured_noise(rng, CLIP_SAMPLES, p["noise_colour"])
    return clip


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = SAMPLE_RATE,
                   fmin: float = MEL_FMIN, fmax: float = MEL_FMAX) -> np.ndarray:
    """Triangular filters on the HTK mel scale, (n_mels, n_fft//2 + 1), each normalised to unit area
    so that narrow low-frequency bands are not dwarfed by wide high ones."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    edges_hz = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    bins_hz = np.fft.rfftfreq(n_fft, 1.0 / rate)
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bins_hz - lower) / (centre - lower)
    falling = (upper - bins_hz) / (upper - centre)
    filters = np.maximum(0.0, np.minimum(rising, falling))
    return filters / filters.sum(axis=1, keepdims=True)


_MEL_FILTERS = mel_filterbank()
_WINDOW = np.hanning(N_FFT + 1)[:-1]       # periodic Hann


def log_mel(clip: np.ndarray) -> np.ndarray:
    """(N_MELS, N_FRAMES) log mel power of a 1 s clip; rows are frequencies (low first), columns time."""
    padded = np.pad(clip, N_FFT // 2)
    # Frame i is centred on sample HOP/2 + i·HOP of the clip, i.e. starts there in `padded`.
    starts = HOP // 2 + HOP * np.arange(N_FRAMES)
    frames = padded[starts[:, None] + np.arange(N_FFT)[None, :]] * _WINDOW
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 / N_FFT
    mel = power @ _MEL_FILTERS.T                     # (frames, mels)
    return np.log(mel + LOG_FLOOR).T


def clip_features(task: tuple[dict, dict]) -> np.ndarray:
    """Worker: the un-normalised log-mel image of one clip, float32 (32, 32)."""
    params, config = task
    return log_mel(render_clip(params, config)).astype(np.float32)


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a train/test split that keeps every class's share; both sorted."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = int(round(len(members) * test_fraction))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def make_words(out_dir: str | Path, seed: int = 0, workers: int = 2, clips_per_word: int | None = None) -> dict:
    """Writes words_train.npz, words_test.npz and words_labels.json; returns their manifest entry.
    `clips_per_word`: other than the example's WORDS_CONFIG value (a larger set, e.g. for examples/zipper_heldout)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = words_config(seed, clips_per_word)
    params = draw_clip_params(config, seed)
    tasks = [(p, config) for p in params]
    if workers > 1:
        # imap keeps the order of the clips, so the result does not depend on the scheduling.
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            features = list(pool.imap(clip_features, tasks, chunksize=32))
    else:
        features = [clip_features(t) for t in tasks]
    x = np.stack(features)[..., None]
    y = np.array([p["label"] for p in params], dtype=np.int64)

    # The split uses a seed of its own (derived from `seed`) so that it does not shift when the number
    # of random draws per clip changes.
    train_idx, test_idx = stratified_split(y, config["test_fraction"], seed + 1)
    # Normalise with the training set's statistics (one scalar mean and std): values end up roughly in
    # [-3, 3], the same order as the Fashion images, which matters to the shared codebooks of the merge.
    mean = float(x[train_idx].mean())
    std = float(x[train_idx].std())
    x = ((x - mean) / std).astype(np.float32)

    outputs = {}
    for split, idx in (("train", train_idx), ("test", test_idx)):
        name = f"words_{split}.npz"
        save_npz(out_dir / name, x[idx], y[idx])
        outputs[name] = describe_arrays(x[idx], y[idx])
    labels_info = {
        "words": list(config["words"]),
        "feature": "log mel power, 32 mel bands (rows, low frequencies first) x 32 frames (columns)",
        "normalisation": {"mean": mean, "std": std,
                          "formula": "x = (log(mel_power + log_floor) - mean) / std"},
        "log_floor": LOG_FLOOR,
        "sample_rate": SAMPLE_RATE,
    }
    (out_dir / "words_labels.json").write_text(json.dumps(labels_info, indent=2) + "\n")
    outputs["words_labels.json"] = {}
    return {"config": config, "outputs": outputs}


def words_config(seed: int, clips_per_word: int | None = None) -> dict:
    config = {**WORDS_CONFIG, "seed": seed, "espeak_ng": espeak_version()}
    if clips_per_word is not None:
        config["clips_per_word"] = int(clips_per_word)
    return config


# ---------------------------------------------------------------------------------------------------
# Files and manifest
# ---------------------------------------------------------------------------------------------------

def save_npz(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    # Written to a temporary name first so that an interrupted run never leaves a truncated file that a
    # later run would take as done.
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, x=x, y=y)
    tmp.replace(path)


def describe_arrays(x: np.ndarray, y: np.ndarray) -> dict:
    """Shape, class counts and a hash of the array contents (the .npz bytes themselves carry zip
    timestamps, so they differ from run to run even when the data do not)."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(x).tobytes())
    digest.update(np.ascontiguousarray(y).tobytes())
    return {"n": int(x.shape[0]), "shape": list(x.shape), "class_counts": np.bincount(y).tolist(),
            "sha256": digest.hexdigest()}


def read_manifest(out_dir: Path) -> dict:
    try:
        return json.loads((out_dir / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return {}


def is_up_to_date(manifest: dict, name: str, config: dict, out_dir: Path) -> bool:
    entry = manifest.get(name)
    return (entry is not None and entry.get("config") == config
            and all((out_dir / f).is_file() for f in entry.get("outputs", {})))


def build_all(out_dir: str | Path, seed: int = 0, workers: int = 2, force: bool = False,
              clips_per_word: int | None = None, which: tuple[str, ...] = ("fashion", "words")) -> dict:
    """Builds whichever data set (of `which`) is missing or out of date; returns the manifest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(out_dir)
    builders = {"fashion": (FASHION_CONFIG, lambda: make_fashion(out_dir)),
                "words": (words_config(seed, clips_per_word),
                          lambda: make_words(out_dir, seed=seed, workers=workers, clips_per_word=clips_per_word))}
    for name, (config, build) in builders.items():
        if name not in which:
            continue
        if not force and is_up_to_date(manifest, name, config, out_dir):
            print(f"data: {name} up to date in {out_dir}")
            continue
        started = time.perf_counter()
        entry = build()
        entry["build_seconds"] = round(time.perf_counter() - started, 1)
        manifest[name] = entry
        # Written after every data set, so a failure in the second keeps the first.
        (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        sizes = ", ".join(f"{f}: {o['n']}" for f, o in entry["outputs"].items() if "n" in o)
        print(f"data: built {name} in {entry['build_seconds']} s ({sizes})")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the example's data sets (Fashion-MNIST, spoken words).")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the spoken-word data set")
    parser.add_argument("--workers", type=int, default=2, help="processes synthesising words")
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    try:
        build_all(args.out, seed=args.seed, workers=args.workers, force=args.force)
    except FileNotFoundError as e:
        sys.exit(f"data: error: {e}")


if __name__ == "__main__":
    main()
