"""The link over TLS with per-node credentials, on a private Mosquitto that demands both."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import cityvisor.plugins.demo as demo
import cityvisor.plugins.link as link
from cityvisor.link.central import Central
from cityvisor.link.edge import EdgeNode
from cityvisor.testing import free_tcp_port, running_hub, wait_for_point
from tests.link.conftest import central, edge, group_id, tank

pytestmark = pytest.mark.anyio

WAIT = 10.0


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(directory: Path, name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate):
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_pki(directory: Path) -> None:
    """A CA, the broker's certificate for 127.0.0.1, and one client certificate."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("test CA"))
        .issuer_name(_name("test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    _write(directory, "ca", ca_key, ca)
    for name, alt in (("broker", True), ("client", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        if alt:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        _write(directory, name, key, builder.sign(ca_key, hashes.SHA256()))


@asynccontextmanager
async def tls_broker(directory: Path, port: int) -> AsyncIterator[None]:
    """Mosquitto on ``port`` with TLS, client certificates and a password file."""
    passwords = directory / "passwords"
    passwords.touch()
    for user, secret in (("edge-talant", "edge-secret"), ("central-room", "central-secret")):
        await anyio.run_process(["mosquitto_passwd", "-b", str(passwords), user, secret])
    conf = directory / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        f"cafile {directory / 'ca.pem'}\ncertfile {directory / 'broker.pem'}\n"
        f"keyfile {directory / 'broker.key'}\nrequire_certificate true\n"
        f"allow_anonymous false\npassword_file {passwords}\n"
        # Run as root (CI), Mosquitto would become the user mosquitto, who cannot read
        # this test's private directory; as anyone else the setting has no effect.
        "user root\n"
    )
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    process = await anyio.open_process(
        [mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        with anyio.fail_after(WAIT):
            while True:
                try:
                    stream = await anyio.connect_tcp("127.0.0.1", port)
                    await stream.aclose()
                    break
                except OSError:
                    await anyio.sleep(0.05)
        yield
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def test_edge_and_central_meet_over_tls_with_their_own_credentials(
    tmp_path: Path, monkeypatch
):
    make_pki(tmp_path)
    monkeypatch.setenv("CITYVISOR_TEST_EDGE_PASSWORD", "edge-secret")
    monkeypatch.setenv("CITYVISOR_TEST_CENTRAL_PASSWORD", "central-secret")
    monkeypatch.setenv("CITYVISOR_TEST_WRONG_PASSWORD", "not-the-secret")
    port = free_tcp_port()
    group = group_id()
    tls = {
        "tls_ca": str(tmp_path / "ca.pem"),
        "tls_cert": str(tmp_path / "client.pem"),
        "tls_key": str(tmp_path / "client.key"),
    }
    for name in ("c", "e", "x"):
        (tmp_path / name).mkdir()
    async with tls_broker(tmp_path, port):
        central_file = central(
            group,
            f"{group}-room",
            port=port,
            username="central-room",
            password_env="CITYVISOR_TEST_CENTRAL_PASSWORD",
            **tls,
        )
        edge_file = edge(
            group,
            "talant",
            tank("t1", initial_level=30.0),
            port=port,
            username="edge-talant",
            password_env="CITYVISOR_TEST_EDGE_PASSWORD",
            **tls,
        )
        intruder_file = edge(
            group,
            "intruder",
            tank("t1"),
            port=port,
            username="edge-talant",
            password_env="CITYVISOR_TEST_WRONG_PASSWORD",
            **tls,
        )
        async with (
            running_hub(central_file, tmp_path / "c", plugins=[demo, link]) as hub,
            running_hub(edge_file, tmp_path / "e", plugins=[demo, link]),
            running_hub(intruder_file, tmp_path / "x", plugins=[demo, link]) as intruder_hub,
        ):
            host = link.role(hub)
            assert isinstance(host, Central)
            with anyio.fail_after(WAIT):
                await host.wait_born(group, "talant", "t1")
            await wait_for_point(
                hub, "talant/nord/demo/t1/level", lambda v: v.value == 30.0, timeout=WAIT
            )
            intruder = link.role(intruder_hub)
            assert isinstance(intruder, EdgeNode)
            # A wrong password is refused by the broker: that edge never gets on.
            with anyio.fail_after(WAIT):
                while intruder.connection_failures == 0:  # noqa: ASYNC110  (a counter)
                    await anyio.sleep(0.05)
            assert not intruder.connected
            assert "authori" in intruder.last_error.lower(), intruder.last_error
            assert (group, "intruder") not in host.nodes
