"""A real net-snmp agent (snmpd) for the SNMP tests, started and stopped by the tests.

:class:`Snmpd` writes its own configuration and persistent directory in a
temporary directory, listens on a free UDP port of 127.0.0.1 only, and
ignores the machine's configuration (``-C -c``). It serves:

* v2c community ``public`` (read-only) and ``private`` (read-write), both
  only from 127.0.0.1;
* a v3 user created with ``createUser`` (SHA / AES) in the persistent
  directory, so a restart keeps its engine ID and counts engineBoots up,
  like a real switch;
* a write view limited to the system group: a SET on the test machine's
  real interfaces (ifAdminStatus) is refused with ``noAccess`` whatever the
  test does, so no test can take an interface of the machine down.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
APT_HINT = (
    "net-snmp is not installed: install the Debian packages listed in .ci/run "
    "(apt-get install -y snmpd snmp)"
)


def find_program(name: str) -> str:
    """The path of a net-snmp program; fails the test (never skips) when it is missing."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None:
        pytest.fail(f"{name} not found. {APT_HINT}", pytrace=False)
    return path


def free_udp_port() -> int:
    """A UDP port of 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Snmpd:
    """One snmpd process; ``start()``/``stop()``/``restart()`` are blocking (use a thread)."""

    workdir: Path
    port: int = field(default_factory=free_udp_port)
    read_community: str = "public"
    write_community: str = "private"
    user: str = "cvadmin"
    auth_key: str = "auth-secret-1"
    priv_key: str = "priv-secret-1"
    process: subprocess.Popen[bytes] | None = None

    @property
    def config_file(self) -> Path:
        """The configuration the fixture writes."""
        return self.workdir / "snmpd.conf"

    @property
    def persistent_dir(self) -> Path:
        """Where snmpd keeps its engine ID, engineBoots and users between runs."""
        return self.workdir / "persist"

    @property
    def log_file(self) -> Path:
        """snmpd's own log (``-Lo`` to this file)."""
        return self.workdir / "snmpd.log"

    def write_config(self) -> None:
        """Write snmpd.conf and seed the persistent dir with the v3 user."""
        self.persistent_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(
            f"""\
agentaddress udp:127.0.0.1:{self.port}
view all included .1
# Writable: sysUpTime (to get notWritable) and sysLocation only; never an interface.
view writable included .1.3.6.1.2.1.1.3
view writable included .1.3.6.1.2.1.1.6
com2sec readers 127.0.0.1 {self.read_community}
com2sec writers 127.0.0.1 {self.write_community}
group readers v2c readers
group writers v2c writers
group v3users usm {self.user}
access readers "" v2c noauth exact all none none
access writers "" v2c noauth exact all writable none
access v3users "" usm priv exact all writable none
"""
        )
        persistent = self.persistent_dir / "snmpd.conf"
        if not persistent.exists():
            # snmpd turns this line into a localized usmUser entry on first start.
            persistent.write_text(
                f'createUser {self.user} SHA "{self.auth_key}" AES "{self.priv_key}"\n'
            )

    def start(self, timeout: float = 10.0) -> None:
        """Start snmpd and wait until it answers (a v2c GET of sysUpTime)."""
        snmpd = find_program("snmpd")
        snmpget = find_program("snmpget")
        self.write_config()
        env = {
            **os.environ,
            "SNMP_PERSISTENT_DIR": str(self.persistent_dir),
            "MIBS": "",  # numeric OIDs only: no MIB loading noise in the log
        }
        log = self.log_file.open("ab")
        try:
            self.process = subprocess.Popen(
                [
                    snmpd,
                    "-f",
                    "-Lo",
                    "-C",
                    # The persistent file is listed because -C skips the default ones.
                    "-c",
                    f"{self.config_file},{self.persistent_dir / 'snmpd.conf'}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"snmpd exited at start:\n{self.log_tail()}")
            probe = subprocess.run(
                [
                    snmpget,
                    "-v2c",
                    "-c",
                    self.read_community,
                    "-r0",
                    "-t0.3",
                    "-On",
                    self.address,
                    SYS_UPTIME,
                ],
                capture_output=True,
                env=env,
                check=False,
            )
            if probe.returncode == 0:
                return
        self.stop()
        raise RuntimeError(f"snmpd did not answer within {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop snmpd (SIGTERM, so that it saves its persistent data)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Stop and start again on the same port (a switch reboot)."""
        self.stop()
        self.start()

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, as net-snmp's tools want it."""
        return f"127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        """The end of snmpd's log, for failure messages."""
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def snmptrap(*args: str) -> None:
    """Run net-snmp's ``snmptrap`` (blocking: call it in a thread); fail on error."""
    command = [find_program("snmptrap"), *args]
    result = subprocess.run(
        command, capture_output=True, env={**os.environ, "MIBS": ""}, check=False, timeout=10
    )
    if result.returncode != 0:
        raise RuntimeError(f"snmptrap failed: {result.stderr.decode(errors='replace')}")
