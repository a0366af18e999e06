"""Anchors and bundles: the journal's head signed with an Ed25519 key kept outside the database.

The hash chain (:mod:`.chain`) shows that no row was changed *since the row
after it was written*; someone holding the database could still rewrite the
whole chain, or cut its newest rows. An **anchor** closes that: the head
(row id and hash) signed with a key the database never holds, written to the
journal and appended to an anchor file that an operator archives elsewhere.
A rewritten or cut journal no longer has the row an earlier anchor names.

An anchor is one JSON object::

    {"format": "cityvisor-anchor/1", "ts": 1790000000000, "row_id": 41,
     "hash": "<64 hex>", "key": "sha256:<64 hex>", "signature": "<base64>"}

``signature`` is Ed25519 over the UTF-8 bytes of the object *without*
``signature``, as JSON with sorted keys, ``ensure_ascii=False`` and the
separators ``","`` and ``":"``. ``key`` is the fingerprint of the public key:
``sha256:`` and the hex SHA-256 of its 32 raw bytes.

A **bundle** is a journal range for another machine, JSON lines: a header
(``format`` ``cityvisor-journal-bundle/1``, ``first_id``, ``last_id``,
``rows``, ``prev_hash`` of the first row, ``head_hash`` of the last, ``key``),
one line per row (its stored columns with ``prev_hash`` and ``hash``), and a
last line ``{"signature": "<base64>"}``: Ed25519 over every byte before that
line. Nothing here knows SQLite.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..points import now_ms
from .chain import ChainRow, ChainSource, ChainState, ChainVerifier, verify_store
from .interface import JournalEntry, Store

ANCHOR_KIND = "journal.anchor"
"""The kind of the journal entry that records an anchor."""

ANCHOR_INTERVAL = 86_400.0
"""Seconds between two anchors the hub writes (``[journal] anchor_key`` set): one a day."""

ANCHOR_FORMAT = "cityvisor-anchor/1"
BUNDLE_FORMAT = "cityvisor-journal-bundle/1"


class AnchorError(Exception):
    """A key that cannot be read, or an anchor or bundle that does not hold; the message says which."""


# --------------------------------------------------------------------------- keys


def generate_key() -> tuple[bytes, bytes]:
    """A new Ed25519 key: (private PEM, public PEM)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def load_private_key(spec: str) -> Ed25519PrivateKey:
    """The private key named by ``[journal] anchor_key``: a PEM file, or ``env:NAME``."""
    if spec.startswith("env:"):
        name = spec[4:]
        text = os.environ.get(name)
        if not text:
            raise AnchorError(f"anchor_key: the environment variable {name} is not set")
        data, where = text.encode(), f"the environment variable {name}"
    else:
        try:
            data, where = Path(spec).read_bytes(), spec
        except OSError as error:
            raise AnchorError(f"anchor_key: cannot read {spec}: {error.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise AnchorError(f"anchor_key: {where} holds no unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AnchorError(f"anchor_key: {where} is not an Ed25519 key")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file (``KEY.pub`` from ``cityvisor journal keygen``)."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise AnchorError(f"cannot read the public key {path}: {error.strerror}") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise AnchorError(f"{path} holds no PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise AnchorError(f"{path} is not an Ed25519 public key")
    return key


def fingerprint(key: Ed25519PublicKey) -> str:
    """``sha256:`` and the hex SHA-256 of the key's 32 raw bytes."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


# --------------------------------------------------------------------------- anchors


def _signed_bytes(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def make_anchor(key: Ed25519PrivateKey, state: ChainState, ts: int) -> dict[str, Any]:
    """The signed anchor of the chain's head as ``state`` found it (see the module docstring)."""
    if state.broken is not None or state.head_id is None:
        raise AnchorError("no anchor for a chain that is empty or broken: verify it first")
    body = {
        "format": ANCHOR_FORMAT,
        "ts": ts,
        "row_id": state.head_id,
        "hash": state.head_hash,
        "key": fingerprint(key.public_key()),
    }
    signature = base64.b64encode(key.sign(_signed_bytes(body))).decode()
    return {**body, "signature": signature}


def check_anchor(anchor: Any, key: Ed25519PublicKey) -> str | None:
    """Why ``anchor`` is not a valid anchor signed by ``key``, or None when it is."""
    if not isinstance(anchor, dict) or anchor.get("format") != ANCHOR_FORMAT:
        return "not an anchor"
    body = {name: value for name, value in anchor.items() if name != "signature"}
    if body.get("key") != fingerprint(key):
        return f"signed with another key ({body.get('key')})"
    try:
        key.verify(base64.b64decode(str(anchor.get("signature", ""))), _signed_bytes(body))
    except (InvalidSignature, ValueError):
        return "its signature does not match"
    if not isinstance(body.get("row_id"), int) or not isinstance(body.get("hash"), str):
        return "it names no row"
    return None


def read_anchor_file(path: str | Path) -> list[Any]:
    """The anchors of an anchor file, in order (a line that is not JSON is kept as text)."""
    anchors: list[Any] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                anchors.append(json.loads(line))
            except ValueError:
                anchors.append(line)
    return anchors


def append_anchor(path: str | Path, anchor: dict[str, Any]) -> None:
    """Append ``anchor`` as one line to the anchor file, synced before returning."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("a", encoding="utf-8") as out:
        out.write(json.dumps(anchor, sort_keys=True) + "\n")
        out.flush()
        os.fsync(out.fileno())


async def anchor_store(
    store: Store, key: Ed25519PrivateKey, anchor_file: str | Path, user: str
) -> dict[str, Any] | None:
    """Verify the chain, sign its head, append the anchor to ``anchor_file`` and journal it.

    Returns the anchor, or None when the chain is broken (nothing is signed).
    The file is written first: an anchor only in the file is harmless, one
    only in the database would be lost with it.
    """
    state = await verify_store(store)
    if not state.ok:
        return None
    anchor = make_anchor(key, state, now_ms())
    await anyio.to_thread.run_sync(append_anchor, anchor_file, anchor)
    await store.journal(
        JournalEntry(
            kind=ANCHOR_KIND,
            message=f"journal anchored at row {anchor['row_id']}",
            user=user,
            data={"anchor": anchor, "file": str(anchor_file)},
        )
    )
    return anchor


async def check_anchors(
    store: ChainSource, state: ChainState, anchors: list[tuple[str, Any]], key: Ed25519PublicKey
) -> tuple[str, Any, str] | None:
    """The first of ``anchors`` (where it was found, the anchor) that does not hold, and why."""
    for where, anchor in anchors:
        problem = check_anchor(anchor, key)
        if problem is None:
            rows = await store.journal_chain_rows(anchor["row_id"] - 1, 1)
            if not rows or rows[0].id != anchor["row_id"]:
                problem = (
                    f"it names row {anchor['row_id']}, which the journal no longer has"
                    f" (it ends at row {state.head_id}): the journal was cut or rewritten"
                )
            elif rows[0].hash != anchor["hash"]:
                problem = "the journal's row has another hash: the journal was rewritten"
        if problem is not None:
            return where, anchor, problem
    return None


# --------------------------------------------------------------------------- bundles


def write_bundle(
    rows: list[ChainRow], key: Ed25519PrivateKey, extra: dict[str, Any] | None = None
) -> bytes:
    """A signed bundle of ``rows`` (consecutive, in ``id`` order; see the module docstring)."""
    if not rows:
        raise AnchorError("no journal rows in that range")
    header = {
        **(extra or {}),
        "format": BUNDLE_FORMAT,
        "first_id": rows[0].id,
        "last_id": rows[-1].id,
        "rows": len(rows),
        "prev_hash": rows[0].prev_hash,
        "head_hash": rows[-1].hash,
        "key": fingerprint(key.public_key()),
    }
    lines = [json.dumps(header, sort_keys=True, ensure_ascii=False)]
    lines += [json.dumps(asdict(row), ensure_ascii=False) for row in rows]
    body = ("\n".join(lines) + "\n").encode("utf-8")
    signature = base64.b64encode(key.sign(body)).decode()
    return body + (json.dumps({"signature": signature}) + "\n").encode()


@dataclass(frozen=True, slots=True)
class BundleCheck:
    """What a bundle holds once checked: its header and the chain state of its rows."""

    header: dict[str, Any]
    state: ChainState


def verify_bundle(data: bytes, key: Ed25519PublicKey) -> BundleCheck:
    """Check a bundle's signature, key and chain; raise :class:`AnchorError` naming what fails."""
    body, _, last = data.rstrip(b"\n").rpartition(b"\n")
    try:
        signature = base64.b64decode(json.loads(last)["signature"])
        lines = body.decode("utf-8").splitlines()
        header = json.loads(lines[0])
    except (ValueError, KeyError, TypeError, IndexError):
        raise AnchorError("not a journal bundle (no header or no signature line)") from None
    if not isinstance(header, dict) or header.get("format") != BUNDLE_FORMAT:
        raise AnchorError("not a journal bundle (unknown format)")
    if header.get("key") != fingerprint(key):
        raise AnchorError(f"the bundle was signed with another key ({header.get('key')})")
    try:
        key.verify(signature, body + b"\n")
    except InvalidSignature:
        raise AnchorError("the bundle's signature does not match: it was changed") from None
    verifier = ChainVerifier(prev_hash=str(header["prev_hash"]), after_id=header["first_id"] - 1)
    verifier.feed(_rows(lines[1:]))
    state = verifier.state()
    if state.ok and (state.rows != header["rows"] or state.head_hash != header["head_hash"]):
        raise AnchorError("the bundle's rows are not those its header counts")
    return BundleCheck(header, state)


def _rows(lines: Iterable[str]) -> list[ChainRow]:
    try:
        return [ChainRow(**json.loads(line)) for line in lines]
    except (ValueError, TypeError):
        raise AnchorError("a row of the bundle cannot be read") from None
