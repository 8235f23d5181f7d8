"""The C2SP tlog-witness client (https://c2sp.org/tlog-witness): get our tree checkpoints cosigned.

``add-checkpoint``: POST ``<witness URL>/add-checkpoint`` with the body ``old <size>``, the RFC 9162 consistency
proof from that size (one base64 hash per line), an empty line, and the signed checkpoint. The witness checks our
signature and that the new tree extends the one it cosigned last, and answers with its cosignature line(s)
(C2SP tlog-cosignature). 409 means it knows another size (its body says which): we prove from there once. 422 (bad
consistency proof) and 403 are refusals: a witness that refuses our checkpoint has caught a fork or rollback, or
our tree is wrong; either way the checkpoint stays unwitnessed, which ``verify --policy`` reports.

``Witnesses.submit`` offers a checkpoint to each witness; where what they cosigned is kept is the subclass's:
``Witnessing`` keeps, per chain directory, the size each witness URL cosigned last (``checkpoints/witnesses.json``)
and stores the cosignatures next to the note (``checkpoints/<size>.cosig``), both written atomically; the
Elasticsearch sink keeps them as documents (audit/sinks/elasticsearch.py ``EsWitnessing``).
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from audit import checkpoint as cp
from audit import merkle
from audit.tiles import TileError
from common.fsio import write_atomic

STATE_FILE = "witnesses.json"  # in checkpoints/: the chain directory is watched for files planted by others
TIMEOUT = 5.0

log = logging.getLogger(__name__)


class WitnessError(Exception):
    """The witness did not cosign; ``status`` is its HTTP status (0: unreachable), the message says why."""

    def __init__(self, status: int, detail: str, known: int | None = None) -> None:
        super().__init__(f"HTTP {status}: {detail}" if status else detail)
        self.status, self.known = status, known


def request_body(old: int, proof: list[bytes], note: str) -> bytes:
    lines = [f"old {old}", *(base64.b64encode(h).decode() for h in proof)]
    return ("\n".join(lines) + "\n\n" + note).encode()


def add_checkpoint(url: str, old: int, proof: list[bytes], note: str, timeout: float = TIMEOUT) -> str:
    """The witness's cosignature lines for ``note``; ``WitnessError`` when it does not cosign."""
    req = urllib.request.Request(url.rstrip("/") + "/add-checkpoint", data=request_body(old, proof, note),
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        text = exc.read().decode("utf-8", "replace").strip()
        known = int(text) if exc.code == 409 and text.isdigit() else None
        raise WitnessError(exc.code, text[:200], known) from None
    except (urllib.error.URLError, OSError) as exc:
        raise WitnessError(0, f"{url}: unreachable: {getattr(exc, 'reason', exc)}") from None
    lines = [line for line in body.splitlines() if line]
    if not lines or not all(line.startswith("\u2014 ") for line in lines):
        raise WitnessError(200, "the answer is not a cosignature")
    return "".join(line + "\n" for line in lines)


class Witnesses:
    """Submits a chain's newest tree checkpoint to each witness in ``urls``; subclasses keep what they cosign."""

    urls: tuple[str, ...]

    def state(self) -> dict[str, int]:
        """The size each witness URL cosigned last."""
        raise NotImplementedError

    def keep(self, url: str, size: int, lines: str, state: dict[str, int]) -> None:
        """Store ``url``'s cosignature ``lines`` for the checkpoint of ``size`` (``state`` is already updated)."""
        raise NotImplementedError

    def submit(self, note_text: str, sub: merkle.Subtrees) -> dict[str, int]:
        """Offer ``note_text`` to every witness (proofs from ``sub``); the size each has cosigned afterwards.
        A witness that fails is logged and left behind: the next checkpoint tries again."""
        note = cp.parse(note_text)
        state = self.state()
        for url in self.urls:
            old = state.get(url, 0)
            if old >= note.size:
                continue
            try:
                lines = self._offer(url, old, note, note_text, sub)
            except (WitnessError, TileError, merkle.ProofError) as exc:
                log.warning("witness did not cosign", extra={"witness": url, "size": note.size, "error": str(exc)})
                continue
            state[url] = note.size
            self.keep(url, note.size, lines, state)
        return state

    @staticmethod
    def _offer(url: str, old: int, note: cp.Checkpoint, note_text: str, sub: merkle.Subtrees) -> str:
        proof = merkle.consistency_proof(sub, old, note.size)
        try:
            return add_checkpoint(url, old, proof, note_text)
        except WitnessError as exc:
            if exc.status != 409 or exc.known is None or exc.known > note.size or exc.known == old:
                raise
            known = exc.known  # the witness knows another size: prove from it, once
        return add_checkpoint(url, known, merkle.consistency_proof(sub, known, note.size), note_text)


@dataclass
class Witnessing(Witnesses):
    """Witnessing for a local store's chain directory (files, see the module doc)."""

    chain_dir: Path
    urls: tuple[str, ...]

    def state(self) -> dict[str, int]:
        try:
            data = json.loads((self.chain_dir / "checkpoints" / STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in data.items() if isinstance(k, str) and type(v) is int}

    def keep(self, url: str, size: int, lines: str, state: dict[str, int]) -> None:
        self._store(size, lines)
        write_atomic(self.chain_dir / "checkpoints" / STATE_FILE, json.dumps(state, sort_keys=True).encode())

    def _store(self, size: int, lines: str) -> None:
        path = self.chain_dir / "checkpoints" / f"{size:020d}.cosig"
        try:
            have = path.read_text()
        except FileNotFoundError:
            have = ""
        names = {line.split(" ")[1] for line in have.splitlines() if line.count(" ") >= 2}
        fresh = "".join(line + "\n" for line in lines.splitlines() if line.split(" ")[1] not in names)
        if fresh:
            write_atomic(path, (have + fresh).encode())
