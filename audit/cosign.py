"""Witness cosignatures (C2SP tlog-cosignature, https://c2sp.org/tlog-cosignature) and witness policies.

- A cosignature is a signed-note signature line ``— <witness name> <base64(key id || timestamp || signature)>``:
  key id = first 4 bytes of SHA-256(name || 0x0A || 0x04 || public key), timestamp = 8 bytes big-endian (seconds
  since the epoch), signature = Ed25519 over ``cosignature/v1\\ntime <timestamp>\\n`` followed by the checkpoint
  body. litewitness v0.6.1 (torchwood) signs the whole body, extension lines included; later torchwood versions
  sign its first three lines only (origin, size, root). Both are accepted: each is the witness's statement about
  this checkpoint's tree, and the extension (our chain head line) is signed by the log key anyway.
- A witness verifier key is ``<name>+<hex key id>+<base64(0x04 || public key)>`` (as litewitness prints it).
- A policy (``verify --policy``) follows C2SP tlog-policy's shape: ``log <vkey>`` names the log key, ``witness <name>
  <vkey>`` each witness, ``quorum <n>`` how many of them must have cosigned a checkpoint for it to count as sealed.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit import checkpoint as cp

_COSIGNATURE_V1 = b"\x04"


class WitnessKeyError(ValueError):
    """A witness key or policy cannot be read; the message says why."""


@dataclass(frozen=True)
class WitnessKey:
    name: str
    key_id: bytes
    public: Ed25519PublicKey

    @classmethod
    def parse(cls, text: str) -> WitnessKey:
        name, _, rest = text.strip().partition("+")
        hex_id, _, blob = rest.partition("+")
        try:
            raw = base64.b64decode(blob, validate=True)
            kid = bytes.fromhex(hex_id)
        except ValueError:  # binascii.Error, or non-ASCII text
            raise WitnessKeyError(f"{text.strip()[:60]!r} is not a witness verifier key") from None
        if not name or len(kid) != 4 or len(raw) != 33 or raw[:1] != _COSIGNATURE_V1:
            raise WitnessKeyError(f"{text.strip()[:60]!r} is not an Ed25519 cosignature/v1 verifier key")
        public = Ed25519PublicKey.from_public_bytes(raw[1:])
        if key_id(name, raw[1:]) != kid:
            raise WitnessKeyError(f"witness key {name!r}: key id {hex_id} does not match the key")
        return cls(name, kid, public)


def distinct(witnesses: Sequence[WitnessKey], where: str = "") -> tuple[WitnessKey, ...]:
    """``witnesses``, refused when one is listed twice (by name or by key): a quorum counts signers, and one
    witness listed twice would count as two."""
    names: set[str] = set()
    keys: set[bytes] = set()
    for witness in witnesses:
        raw = witness.public.public_bytes_raw()
        if witness.name in names or raw in keys:
            raise WitnessKeyError(f"{where}witness {witness.name!r} is listed twice (by name or by key)")
        names.add(witness.name)
        keys.add(raw)
    return tuple(witnesses)


def key_id(name: str, raw_public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _COSIGNATURE_V1 + raw_public).digest()[:4]


def message(note: cp.Checkpoint, timestamp: int, whole: bool = True) -> bytes:
    """The bytes a cosignature/v1 signs for ``note`` at ``timestamp``: its whole body, or its first three lines."""
    body = note.body if whole else "\n".join(note.body.split("\n")[:3]) + "\n"
    return f"cosignature/v1\ntime {timestamp}\n{body}".encode()


def cosigned(note: cp.Checkpoint, witness: WitnessKey) -> int | None:
    """The timestamp of ``witness``'s valid cosignature on ``note``, None when it has none."""
    for name, kid, blob in note.signatures:
        if name != witness.name or kid != witness.key_id or len(blob) != 8 + 64:
            continue
        (timestamp,) = struct.unpack(">Q", blob[:8])
        for whole in (True, False):
            try:
                witness.public.verify(blob[8:], message(note, timestamp, whole))
            except InvalidSignature:
                continue
            return timestamp
        return None
    return None


@dataclass(frozen=True)
class Policy:
    log: str  # the log's note verifier key text (name+id+base64), or "" when given separately
    witnesses: tuple[WitnessKey, ...]
    quorum: int

    def met(self, note: cp.Checkpoint) -> tuple[bool, list[str]]:
        """Whether at least ``quorum`` distinct witnesses cosigned ``note``, and which did."""
        names = [w.name for w in self.witnesses if cosigned(note, w) is not None]
        return len(names) >= self.quorum, names


def load_policy(path: Path) -> Policy:
    """A tlog-policy-style file: ``log``, ``witness <name> <vkey>`` and ``quorum <n>`` lines; ``#`` comments."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise WitnessKeyError(f"{path}: cannot read the policy: {exc}") from None
    log, witnesses, quorum = "", [], None
    for number, raw in enumerate(lines, 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] == "log" and len(words) == 2:
            log = words[1]
        elif words[0] == "witness" and len(words) == 3:
            key = WitnessKey.parse(words[2])
            if key.name != words[1]:
                raise WitnessKeyError(f"{path}:{number}: witness {words[1]!r} has a key named {key.name!r}")
            witnesses.append(key)
        elif words[0] == "quorum" and len(words) == 2 and cp.DECIMAL.fullmatch(words[1]):
            quorum = int(words[1])
        else:
            raise WitnessKeyError(f"{path}:{number}: not a policy line: {raw.strip()[:60]!r}")
    if quorum is None or not 0 < quorum <= len(witnesses):
        raise WitnessKeyError(f"{path}: needs 'quorum <n>' with 1 <= n <= the {len(witnesses)} witnesses listed")
    return Policy(log, distinct(witnesses, f"{path}: "), quorum)
