"""Signed checkpoints in the C2SP formats, so standard transparency-log tooling can read them.

- Body per C2SP tlog-checkpoint (https://c2sp.org/tlog-checkpoint): origin line, tree size in decimal, base64 root
  hash, each ending in a newline. Two generations share this body (docs/audit.md, "Transparency log"):
  - *tree checkpoints* (tee-audit v2): the root is the RFC 9162 Merkle tree root of the first ``size`` records
    (audit/merkle.py), and the note is signed under the key name = the origin (``tee-audit/<chain>``), as C2SP
    witnesses require (a log's verifier key is named by its origin);
  - *head checkpoints* (v1, still verified): the "root" is the chain head hash, the hash of the record with
    ``seq == size - 1``, signed under the key name ``tee-audit``.
  A tree checkpoint also carries the chain head hash in an extension line ``tee-audit-head <hex>`` (C2SP
  tlog-checkpoint allows extension lines; witnesses keep and cosign only the first three lines): the chain walk
  checks it exactly as a head checkpoint's root, so verifying from any record on (retention, a trusted
  checkpoint) keeps working wherever the tree's frontier at that record cannot be rebuilt.
  The key name that verifies tells them apart. It is not itself signed (signed-note signatures cover the body
  only), but relabelling a note only makes verify compare its root with the other kind of value, which cannot
  match: a finding, never a pass.
- Envelope per C2SP signed-note (https://c2sp.org/signed-note): body, an empty line, then one line per signature,
  ``— <key name> <base64(key id || signature)>``. Ed25519 key id = first 4 bytes of
  SHA-256(key name || 0x0A || 0x01 || public key); the signature covers the body bytes.
- Verifier keys may also be given in the note vkey form ``<name>+<hex key id>+<base64(0x01 || public key)>``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_NAME = "tee-audit"
HEAD_EXTENSION = "tee-audit-head"
# A size or index: ASCII digits without a leading zero, at most 20 (a uint64). str.isdigit also takes "²", which
# int() refuses, and int() refuses more than 4300 digits: either would escape as a ValueError, not a finding.
DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")
_ED25519 = b"\x01"
_DASH = "\u2014 "


class CheckpointError(ValueError):
    """A checkpoint or key cannot be parsed or used; the message says why."""


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    body: str
    signatures: tuple[tuple[str, bytes, bytes], ...]  # (key name, key id, signature)
    text: str

    @property
    def root_hex(self) -> str:
        return self.root.hex()

    @property
    def chain_id(self) -> str:
        return self.origin.removeprefix("tee-audit/")

    @property
    def head(self) -> bytes | None:
        """The chain head hash of a tree checkpoint's extension line (None when absent or malformed)."""
        for line in self.body.split("\n")[3:]:
            name, _, value = line.partition(" ")
            if name == HEAD_EXTENSION and len(value) == 64:
                try:
                    return bytes.fromhex(value)
                except ValueError:
                    return None
        return None


def origin_for(chain_id: str) -> str:
    return f"tee-audit/{chain_id}"


def key_id(name: str, public: Ed25519PublicKey) -> bytes:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(name.encode() + b"\n" + _ED25519 + raw).digest()[:4]


def vkey(name: str, public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"{name}+{key_id(name, public).hex()}+{base64.b64encode(_ED25519 + raw).decode()}"


def body_text(origin: str, size: int, root: bytes) -> str:
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


def sign(key: Ed25519PrivateKey, chain_id: str, size: int, root_hex: str, name: str = KEY_NAME) -> str:
    """The signed head checkpoint (v1) for a chain of ``size`` records whose last record hashes to ``root_hex``."""
    return _signed(key, body_text(origin_for(chain_id), size, bytes.fromhex(root_hex)), name)


def sign_tree(key: Ed25519PrivateKey, chain_id: str, size: int, root: bytes, head_hex: str) -> str:
    """The signed tree checkpoint for the first ``size`` records, whose RFC 9162 tree root is ``root`` and whose
    last record hashes to ``head_hex``."""
    origin = origin_for(chain_id)
    return _signed(key, f"{body_text(origin, size, root)}{HEAD_EXTENSION} {head_hex}\n", origin)


def is_tree(cp: Checkpoint, public: Ed25519PublicKey) -> bool:
    """A tree checkpoint: signed by ``public`` under the origin as key name."""
    return verify_note(cp.body, cp.signatures, public, cp.origin)


def signed_any(cp: Checkpoint, public: Ed25519PublicKey) -> bool:
    """Signed by ``public``, as a tree or a head checkpoint."""
    return is_tree(cp, public) or verify(cp, public)


def _signed(key: Ed25519PrivateKey, body: str, name: str) -> str:
    sig = key.sign(body.encode())
    blob = base64.b64encode(key_id(name, key.public_key()) + sig).decode()
    return f"{body}\n{_DASH}{name} {blob}\n"


def parse_note(text: str) -> tuple[str, tuple[tuple[str, bytes, bytes], ...]]:
    """A signed note's body (with its final newline) and its signature lines (C2SP signed-note)."""
    body, sep, sigs = text.rpartition("\n\n")
    if not sep or not sigs.endswith("\n"):
        raise CheckpointError("not a signed note: no empty line between body and signatures")
    return body + "\n", _parse_signatures(sigs)


def parse(text: str) -> Checkpoint:
    """Parse a signed checkpoint note (structure only; ``verify`` checks the signature)."""
    body, signatures = parse_note(text)
    lines = body.split("\n")
    if len(lines) < 3 or not lines[0]:
        raise CheckpointError("checkpoint body needs origin, size and root lines")
    origin, size_text, root_text = lines[:3]
    if not DECIMAL.fullmatch(size_text):
        raise CheckpointError(f"checkpoint size {size_text[:24]!r} is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        raise CheckpointError("checkpoint root is not base64") from None
    if len(root) != 32:
        raise CheckpointError("checkpoint root is not a SHA-256 hash")
    return Checkpoint(origin, int(size_text), root, body, signatures, text)


def _parse_signatures(block: str) -> tuple[tuple[str, bytes, bytes], ...]:
    out = []
    for line in block.rstrip("\n").split("\n"):
        if not line.startswith(_DASH):
            raise CheckpointError(f"bad signature line {line[:40]!r}")
        name, _, blob = line[len(_DASH):].partition(" ")
        try:
            raw = base64.b64decode(blob, validate=True)
        except ValueError:  # binascii.Error, or non-ASCII text
            raise CheckpointError("signature is not base64") from None
        if len(raw) < 5:
            raise CheckpointError("signature too short")
        if base64.b64encode(raw).decode() != blob:  # e.g. non-zero padding bits: one signature, one spelling
            raise CheckpointError("signature is not in canonical base64")
        out.append((name, raw[:4], raw[4:]))
    if not out:
        raise CheckpointError("checkpoint carries no signature")
    return tuple(out)


def verify(cp: Checkpoint, public: Ed25519PublicKey, name: str = KEY_NAME) -> bool:
    """True when some signature line is by (``name``, ``public``) and verifies over the body."""
    return verify_note(cp.body, cp.signatures, public, name)


def verify_note(body: str, signatures: tuple[tuple[str, bytes, bytes], ...], public: Ed25519PublicKey,
                name: str) -> bool:
    want = key_id(name, public)
    for sig_name, kid, sig in signatures:
        if sig_name == name and kid == want:
            try:
                public.verify(sig, body.encode())
                return True
            except InvalidSignature:
                return False
    return False


def generate(out: Path) -> tuple[Path, Path]:
    """Write ``audit.key`` (PKCS#8 PEM, mode 0600), ``audit.pub`` (PEM) and ``audit.vkey`` (note verifier key)."""
    out.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    priv, pub = out / "audit.key", out / "audit.pub"
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    (out / "audit.vkey").write_text(vkey(KEY_NAME, key.public_key()) + "\n")
    return priv, pub


def load_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot load the signing key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointError(f"{path}: not an Ed25519 private key")
    return key


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_public_text(vkey_text: str) -> bytes:
    """The raw Ed25519 key of a note verifier key ``name+id+base64(0x01 || key)`` given as text."""
    parts = vkey_text.strip().split("+", 2)
    try:
        raw = base64.b64decode(parts[2], validate=True)
    except (IndexError, ValueError):
        raise CheckpointError(f"{vkey_text[:60]!r} is not a note verifier key") from None
    if len(raw) != 33 or raw[:1] != _ED25519:
        raise CheckpointError(f"{vkey_text[:60]!r} is not an Ed25519 verifier key")
    return raw[1:]


def load_public(path: Path) -> Ed25519PublicKey:
    """A PEM public key, or a note verifier key (``name+id+base64``)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror}") from None
    if data.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise CheckpointError(f"{path}: not an Ed25519 public key")
        return key
    parts = data.decode(errors="replace").strip().split("+", 2)  # base64 may itself contain "+"
    try:
        raw = base64.b64decode(parts[2], validate=True)
    except (IndexError, ValueError):  # binascii.Error, or non-ASCII text (a file that is not UTF-8)
        raise CheckpointError(f"{path}: neither a PEM public key nor a note verifier key") from None
    if len(raw) != 33 or raw[:1] != _ED25519:
        raise CheckpointError(f"{path}: not an Ed25519 verifier key")
    return Ed25519PublicKey.from_public_bytes(raw[1:])
