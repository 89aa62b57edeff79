"""A private OpenSSH server on 127.0.0.1 for the deploy tests (flash, bench --on): host and user keys generated,
a free port, stopped at the end; sessions get a PATH that starts with a folder the tests can put fake commands
in. tests/conftest.py makes the fixtures `sshd` (one server per test module) and `device` of it."""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
SETUP_HINT = "install it with `make setup` (tools/setup.sh: Debian openssh-server and openssh-client)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    """A private sshd on 127.0.0.1: `url(folder)` and `args()` are what a flash to it needs."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.user = getpass.getuser()
        self.key = root / "user_key"
        self.known_hosts = root / "known_hosts"
        self.fakebin = root / "fakebin"
        self.fakebin.mkdir()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        for tool in (SSHD, shutil.which("ssh-keygen"), shutil.which("ssh")):
            if tool is None or not Path(tool).exists():
                pytest.fail(f"{tool or 'ssh/ssh-keygen'} is missing: {SETUP_HINT}")
        r = self.root
        for key in (r / "host_key", self.key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        shutil.copy(str(self.key) + ".pub", r / "authorized_keys")
        # A session's PATH: the fake-command folder first (SetEnv overrides sshd's default PATH).
        path = f"{self.fakebin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        (r / "sshd_config").write_text(f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {r / 'host_key'}
AuthorizedKeysFile {r / 'authorized_keys'}
PidFile {r / 'sshd.pid'}
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
SetEnv PATH={path}
""")
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation folder
        self.log = open(r / "sshd.log", "w")
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(r / "sshd_config")], stdout=self.log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"sshd exited ({self.process.returncode}): {(r / 'sshd.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        pytest.fail(f"sshd did not listen on 127.0.0.1:{self.port}: {(r / 'sshd.log').read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()

    def url(self, folder: Path, port: int | None = None) -> str:
        return f"ssh://{self.user}@127.0.0.1:{port or self.port}{folder}"

    def args(self, key: Path | None = None) -> list[str]:
        return ["--identity", key or self.key, "--ssh-option", f"UserKnownHostsFile={self.known_hosts}"]

    def fake(self, name: str, script: str) -> None:
        p = self.fakebin / name
        p.write_text(script)
        p.chmod(0o755)
