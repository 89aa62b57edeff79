"""`ssh://[USER@]HOST[:PORT]/DIR` flash targets, through the system OpenSSH client (`ssh`): it honours
~/.ssh/config, agents, ProxyJump and known_hosts as the user set them up, and the device needs nothing but sshd
and coreutils (sha256sum, mktemp). The upload, its check on the device and the rename run as one remote script."""
from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass, field

from edgemerge.deploy.transfer import FlashError, sha256_hex, throttled_chunks

# Remote scripts run by `sh -c SCRIPT sh ARGS...` (whatever the login shell is); every value reaches
# them as a positional argument quoted with shlex.quote, never pasted into the script.
_PROBE = r"""
dir=$1; shift
echo "machine=$(uname -m)"
at=$dir
if [ ! -d "$dir" ]; then
    at=$(dirname -- "$dir")
    [ -d "$at" ] || { echo "nodir=yes"; exit 0; }
    echo "create=yes"
fi
if [ -w "$at" ] && [ -x "$at" ]; then echo "writable=yes"; else echo "writable=no"; fi
echo "free_kib=$(df -Pk -- "$at" | awk 'NR==2 {print $4}')"
if command -v sha256sum >/dev/null 2>&1; then echo "sha256sum=yes"; else echo "sha256sum=no"; fi
for name in "$@"; do
    if [ -f "$dir/$name" ]; then echo "old $name $(sha256sum -- "$dir/$name" | cut -d' ' -f1)"; fi
done
"""

_INSTALL = r"""
dir=$1; name=$2; want=$3; mode=$4
[ -d "$dir" ] || mkdir -- "$dir" || exit 20
cd -- "$dir" || exit 20
removed=0
for old in ".$name.edgemerge-tmp."*; do
    [ -e "$old" ] || continue
    rm -f -- "$old" && removed=$((removed + 1))
done
echo "leftovers=$removed"
tmp=$(mktemp ".$name.edgemerge-tmp.XXXXXX") || exit 21
trap 'rm -f -- "$tmp"' EXIT
trap 'exit 1' HUP INT TERM PIPE
cat > "$tmp" || exit 21
sync "$tmp" 2>/dev/null || sync
got=$(sha256sum -- "$tmp" | cut -d' ' -f1)
if [ "$got" != "$want" ]; then echo "mismatch=$got"; exit 22; fi
chmod "$mode" "$tmp" || exit 21
mv -f -- "$tmp" "$name" || exit 23
sync
echo "final=$(sha256sum -- "$name" | cut -d' ' -f1)"
"""

_RUN = r"""
dir=$1; model=$2; task=$3
work=$(mktemp -d) || exit 31
trap 'rm -rf -- "$work"' EXIT
trap 'exit 1' HUP INT TERM PIPE
cat > "$work/x.f32" || exit 31
[ -x "$dir/em_run" ] || { echo "no em_run at $dir/em_run" >&2; exit 32; }
"$dir/em_run" "$dir/$model" --task "$task" --input "$work/x.f32" --output "$work/y.f32" >&2 || exit 30
cat -- "$work/y.f32"
"""

_UNREACHABLE = ("Connection refused", "No route to host", "Could not resolve hostname", "Connection timed out",
                "Network is unreachable", "Name or service not known", "Operation timed out",
                "Connection closed by", "Connection reset")


@dataclass
class SshTarget:
    host: str
    directory: str
    user: str | None = None
    port: int | None = None
    identity: str | None = None
    ssh_options: list[str] = field(default_factory=list)
    connect_timeout: int = 10
    ssh: str = "ssh"

    kind = "ssh"

    def describe(self) -> str:
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port else ""
        path = self.directory if self.directory.startswith("/") else f"/~/{self.directory}"
        return f"ssh://{user}{host}{port}{path}"

    def _where(self) -> str:
        return f"{self.host}:{self.port or 22}"

    def command(self, script: str, *args: str) -> list[str]:
        """The ssh command line running `script` with `args` on the device. The user's -o options come first:
        ssh takes the first value it sees for an option, so they override our defaults."""
        cmd = [self.ssh]
        for opt in self.ssh_options:
            cmd += ["-o", opt]
        cmd += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}",
                "-o", "StrictHostKeyChecking=accept-new", "-o", "ServerAliveInterval=15",
                "-o", "ServerAliveCountMax=4", "-o", "LogLevel=ERROR"]
        if self.port:
            cmd += ["-p", str(self.port)]
        if self.identity:
            cmd += ["-i", self.identity, "-o", "IdentitiesOnly=yes"]
        remote = " ".join(["sh", "-c", shlex.quote(script), "sh", *map(shlex.quote, args)])
        cmd += ["--", f"{self.user}@{self.host}" if self.user else self.host, remote]
        return cmd

    def _ssh_failure(self, stderr: str, what: str) -> FlashError:
        text = stderr.strip()
        last = text.splitlines()[-1] if text else "no message"
        if "Permission denied" in text:
            key = f"the key {self.identity}" if self.identity else "every key offered (agent, ~/.ssh)"
            return FlashError(f"{self.describe()}: the device refused {key} for "
                              f"{self.user or 'the default user'} ({last}); nothing was changed")
        if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
            return FlashError(f"{self.describe()}: the device's host key does not match known_hosts ({last}); "
                              "nothing was changed")
        if any(s in text for s in _UNREACHABLE) or not text:
            return FlashError(f"{self.describe()}: cannot reach {self._where()} ({last}); nothing was changed"
                              if what == "probe" else
                              f"{self.describe()}: the connection to {self._where()} failed during {what} ({last}); "
                              "the previous files are unchanged")
        return FlashError(f"{self.describe()}: ssh failed during {what}: {last}")

    def _run(self, script: str, args: list[str], what: str, data: bytes = b"",
             limit_kib: float | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        cmd = self.command(script, *args)
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as e:
            raise FlashError(f"cannot run {self.ssh} ({e.strerror}): install the OpenSSH client "
                             "(Debian: openssh-client)") from None
        try:
            try:
                for chunk in throttled_chunks(data, limit_kib):
                    proc.stdin.write(chunk)
                    proc.stdin.flush()
            except BrokenPipeError:
                pass  # the remote side stopped reading: its exit status says why
            finally:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
                proc.stdin = None  # communicate() must not touch it again
            out, err = proc.communicate(timeout=timeout)
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM, timeout): the remote sees its input end early, its checksum
            # cannot match, and it removes the temporary file without touching the old one.
            proc.kill()
            proc.wait()
            raise
        if proc.returncode == 255:
            raise self._ssh_failure(err.decode(errors="replace"), what)
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    def probe(self, names: list[str]) -> dict:
        r = self._run(_PROBE, [self.directory, *names], "probe", timeout=self.connect_timeout + 60)
        text = r.stdout.decode(errors="replace")
        if r.returncode != 0:
            raise FlashError(f"{self.describe()}: probing the device failed (exit {r.returncode}): "
                             f"{r.stderr.decode(errors='replace').strip()}")
        info = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("old "))
        if info.get("nodir") == "yes":
            raise FlashError(f"{self.describe()}: {self.directory} does not exist on the device and cannot be "
                             "created (its parent folder must exist)")
        old = {}
        for line in text.splitlines():
            if line.startswith("old "):
                _, name, sha = line.split(" ", 2)
                old[name] = sha
        if info.get("writable") != "yes":
            raise FlashError(f"{self.describe()}: {self.directory} is not writable for "
                             f"{self.user or 'the login user'} on the device")
        if info.get("sha256sum") != "yes":
            raise FlashError(f"{self.describe()}: the device has no sha256sum (install coreutils there)")
        free = info.get("free_kib", "")
        return {"machine": info.get("machine"), "free_bytes": int(free) * 1024 if free.isdigit() else None,
                "old": old}

    def install(self, data: bytes, name: str, mode: int, limit_kib: float | None = None) -> tuple[str, int]:
        want = sha256_hex(data)
        r = self._run(_INSTALL, [self.directory, name, want, f"{mode:o}"], f"the transfer of {name}", data=data,
                      limit_kib=limit_kib, timeout=max(600, len(data) / (256 * 1024)))
        out = r.stdout.decode(errors="replace")
        err = r.stderr.decode(errors="replace").strip()
        values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        unchanged = "the previous file is unchanged"
        if r.returncode == 20:
            raise FlashError(f"{self.describe()}: cannot enter {self.directory}: {err}")
        if r.returncode == 21:
            if "No space left" in err or "Disk quota exceeded" in err:
                raise FlashError(f"{self.describe()}: the device's disk is full: no space left writing {name} "
                                 f"({len(data)} bytes); {unchanged}")
            raise FlashError(f"{self.describe()}: writing {name} failed on the device: {err}; {unchanged}")
        if r.returncode == 22:
            raise FlashError(f"{self.describe()}: checksum mismatch for {name}: the device read back sha256 "
                             f"{values.get('mismatch')}, the host sent {want}; {unchanged}")
        if r.returncode == 23:
            raise FlashError(f"{self.describe()}: renaming {name} into place failed: {err}; {unchanged}")
        if r.returncode != 0:
            raise FlashError(f"{self.describe()}: the transfer of {name} failed (exit {r.returncode}): {err}; "
                             f"{unchanged}")
        final = values.get("final")
        if final != want:
            raise FlashError(f"{self.describe()}: {name} reads back sha256 {final} after the rename, the host "
                             f"sent {want}: the device's storage is failing")
        return final, int(values.get("leftovers", "0") or 0)

    def run_script(self, script: str, args: list[str], what: str, data: bytes = b"",
                   timeout: float = 600) -> subprocess.CompletedProcess:
        """Runs `sh -c script sh args...` on the device (args quoted, never pasted into the script); ssh's own
        failures (unreachable, refused key, host key) raise FlashError, the script's exit status is returned."""
        return self._run(script, args, what, data=data, timeout=timeout)

    def run_em_run(self, board, task: str, x: bytes, model_name: str) -> bytes:
        r = self._run(_RUN, [self.directory, model_name, task], f"em_run of task {task!r}", data=x)
        if r.returncode != 0:
            err = r.stderr.decode(errors="replace").strip()
            hint = ": add --with-runtime" if r.returncode == 32 else ""
            raise FlashError(f"em_run on {self.describe()} failed for task {task!r} (exit {r.returncode}): "
                             f"{err}{hint}")
        return r.stdout
