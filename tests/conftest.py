"""Shared pytest set-up: the `slow` marker and the session's trained source models (tests/model_factory.py)."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# A suite started from a script in the background (`make test &`: POSIX shells start background jobs with SIGINT
# ignored) passes that SIG_IGN on to every child process, and Python keeps an ignored SIGINT ignored: the kill
# tests' SIGINT then never stops their merges, which wait out their limits and fail. The suite's own process takes
# Python's usual handler back; its children then start with the default action and install theirs.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

SLOW_MARKER = "slow: trains or calibrates models for longer than a few seconds (deselect with -m 'not slow')"


def pytest_configure(config: pytest.Config) -> None:
    # pyproject.toml registers the marker; this keeps `-m slow` and --strict-markers working without it.
    if not any(line.split(":")[0].strip() == "slow" for line in config.getini("markers")):
        config.addinivalue_line("markers", SLOW_MARKER)
    _refuse_a_stale_install()


def _refuse_a_stale_install() -> None:
    """Stops the session when the imported edgemerge is an install whose Python code differs from sdk/ (see
    installed_tree.py): the tests would exercise the old code."""
    import edgemerge
    from installed_tree import stale_python_files

    tree = Path(__file__).resolve().parent.parent / "sdk" / "edgemerge"
    installed = Path(edgemerge.__file__).resolve().parent
    if installed == tree or not tree.is_dir():
        return
    stale = stale_python_files(tree, installed)
    if stale:
        shown = ", ".join(stale[:3]) + (f" and {len(stale) - 3} more" if len(stale) > 3 else "")
        pytest.exit(f"error: the edgemerge Python imports ({installed}) is not this tree's sdk/edgemerge ({shown} "
                    "differ): run `make setup`, or set PYTHONPATH=sdk", returncode=4)


@pytest.fixture(scope="session")
def trained_model_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """task -> saved model file for every task of model_factory.TASKS, trained once per session (~10 s)."""
    import model_factory

    # no skip when the data set is missing: `make test` installs it, and a silently skipped suite is no pass
    model_factory.fashion_mnist()
    directory = tmp_path_factory.mktemp("trained_models")
    return {task: model_factory.train_model(spec, directory) for task, spec in model_factory.TASKS.items()}


@pytest.fixture(scope="session")
def source_models(trained_model_paths: dict[str, Path]):
    """task -> imported SourceModel of every trained model."""
    from edgemerge.importers import load_source_model

    return {task: load_source_model(path) for task, path in trained_model_paths.items()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny trained pair of tests/tiny_pair.py (about 3 s), once per test module that asks for it."""
    import tiny_pair

    return tiny_pair.build_tiny(tmp_path_factory.mktemp("tiny"))


# -- the loopback OpenSSH server of the deploy tests (tests/ssh_server.py) ---------------------------------
@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    from ssh_server import Sshd

    server = Sshd(tmp_path_factory.mktemp("sshd"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def device(sshd):
    """The server with an empty fake-command folder (cleared again after the test)."""
    yield sshd
    for p in sshd.fakebin.iterdir():
        p.unlink()
