"""``tee-audit``: ship the exporter's journal into a signed hash chain, verify it, manage keys and checkpoints.

``ship`` takes node_exporter-style flags, every one also settable in ``--config.file`` (YAML keys are the flag names
without dashes; flags win; unknown keys are an error). Secrets are only ever read from files.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from audit import config
from audit.setup_cli import setup
from common import __version__
from common.http import ServeError
from common.log import setup_logging
from common.settings import click_options, given

if TYPE_CHECKING:
    from audit.readers.elasticsearch import EsOptions

_PATH = click.Path(path_type=Path)
_Command = TypeVar("_Command", bound=Callable[..., Any])


def _es_reader(url_help: str) -> Callable[[_Command], _Command]:
    """--es, --data-stream and the credential options of a command that reads Elasticsearch, handed to it as one
    ``conn`` (``EsOptions``)."""
    def decorate(command: _Command) -> _Command:
        @functools.wraps(command)
        def with_conn(es: str | None, data_stream: str | None, es_ca_file: Path | None, es_api_key_file: Path | None,
                      es_username: str | None, es_password_file: Path | None, **kwargs: Any) -> Any:
            from audit.readers.elasticsearch import EsOptions

            conn = EsOptions(es, data_stream, es_ca_file, es_api_key_file, es_username, es_password_file)
            return command(conn=conn, **kwargs)

        options = [
            click.option("--es", help=url_help),
            click.option("--data-stream", help="Data stream to read. [default: logs-tee.audit-default]"),
            click.option("--es.ca-file", "es_ca_file", type=_PATH, help="CA bundle for the Elasticsearch certificate."),
            click.option("--es.api-key-file", "es_api_key_file", type=_PATH, help="File holding an API key."),
            click.option("--es.username", "es_username", help="User for basic auth."),
            click.option("--es.password-file", "es_password_file", type=_PATH, help="File holding the password."),
        ]
        for option in reversed(options):
            with_conn = option(with_conn)
        return cast(_Command, with_conn)
    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, "--version")
def main() -> None:
    """Tamper-evident audit trail for confidential-computing hosts.

    `ship` turns the tee-exporter journal (and Alertmanager webhooks) into a per-host SHA-256 hash chain with
    Ed25519-signed C2SP checkpoints, stored in Elasticsearch and/or a local directory; `verify` checks it with
    nothing but the public key. `setup` prepares Elasticsearch once, with an administrator's credential.
    """


main.add_command(setup)


@main.command()
@click.option("--config.file", "config_file", type=_PATH,
              help="YAML file holding any of these settings, keyed by flag name without dashes; flags win.")
@click_options(config.OPTIONS, config.ShipSettings())
@click.pass_context
def ship(ctx: click.Context, config_file: Path | None, **flags: Any) -> None:
    """Ship journal events and alerts into the signed audit chain."""
    try:
        settings = config.load(config_file, given(ctx, flags, config.OPTIONS))
    except config.ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    setup_logging(settings.log_level, settings.log_format)
    from audit.ship import run  # heavy imports (elasticsearch, opentelemetry) only for the daemon

    try:
        status = run(settings)
    except (ServeError, config.ConfigError) as exc:  # a port in use, a bad web config: one line, no traceback
        raise click.UsageError(str(exc)) from None
    sys.exit(status)


@main.command()
@click.option("--store", type=_PATH, help="Local store directory to verify.")
@_es_reader("Elasticsearch URL to verify.")
@click.option("--public-key", type=_PATH, required=True, help="Ed25519 public key (PEM or note vkey).")
@click.option("--chain", help="Chain id. [default: the only chain present]")
@click.option("--from-checkpoint", type=_PATH,
              help="Trusted checkpoint note: verify from its record on (older records may be gone); every record it "
                   "vouches for must be there.")
@click.option("--all-chains", is_flag=True,
              help="With --es: verify every chain in the data stream, in parallel, with one summary.")
@click.option("--checkpoint-every-records", type=click.IntRange(min=0), default=1000, show_default=True,
              help="The shipper's checkpoint.every-records: a longer uncovered tail is a finding (0: not checked).")
@click.option("--checkpoint-every-seconds", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="The shipper's checkpoint.every-seconds: uncovered records older than this plus the grace are a "
                   "finding (0: not checked).")
@click.option("--seal-grace-seconds", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="Allowance for clocks and delivery on top of --checkpoint-every-seconds.")
@click.option("--known-checkpoint", "known_checkpoints", type=_PATH, multiple=True,
              help="A tree checkpoint seen before (an auditor's copy, a witness-cosigned one): the log must extend "
                   "it, else a 'fork' finding. Repeatable.")
@click.option("--policy", type=_PATH,
              help="Witness policy (log, witness <name> <vkey>, quorum <n>): a checkpoint without the quorum of "
                   "cosignatures does not seal its records.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable findings.")
def verify(store: Path | None, conn: EsOptions, public_key: Path, chain: str | None, from_checkpoint: Path | None, all_chains: bool,
           checkpoint_every_records: int, checkpoint_every_seconds: float, seal_grace_seconds: float,
           known_checkpoints: tuple[Path, ...], policy: Path | None, as_json: bool) -> None:
    """Verify a chain; exit 0 intact, 1 not intact, 2 verification could not run."""
    from audit import verify_cli
    from audit.verify import Promise

    promise = Promise(checkpoint_every_records, checkpoint_every_seconds, seal_grace_seconds)
    sys.exit(verify_cli.run(store, conn, public_key, chain, from_checkpoint, as_json, promise, all_chains,
                            known_checkpoints, policy))


@main.command()
@click.option("--out", type=_PATH, required=True, help="Directory for audit.key (0600), audit.pub, audit.vkey.")
def keygen(out: Path) -> None:
    """Create an Ed25519 key pair for signing checkpoints."""
    from audit.checkpoint import generate

    try:
        priv, pub = generate(out)
    except FileExistsError:
        raise click.UsageError(f"{out}/audit.key exists; refusing to overwrite a signing key") from None
    click.echo(f"private key: {priv}\npublic key:  {pub}\nverifier key: {out / 'audit.vkey'}")


@main.group(name="checkpoint")
def checkpoint_group() -> None:
    """Inspect signed checkpoints."""


@checkpoint_group.command()
@click.argument("note", type=_PATH)
@click.option("--public-key", type=_PATH, help="Also check the signature against this key.")
def show(note: Path, public_key: Path | None) -> None:
    """Print a checkpoint note's origin, size, root and signature status (exit 1 if a given key rejects it)."""
    from audit import checkpoint as cp

    try:
        parsed = cp.parse(note.read_text())
        key = cp.load_public(public_key) if public_key else None
    except (OSError, cp.CheckpointError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    info = {"origin": parsed.origin, "size": parsed.size, "root": parsed.root_hex,
            "signatures": [{"name": n, "key_id": k.hex()} for n, k, _ in parsed.signatures]}
    if key is not None:
        tree = cp.is_tree(parsed, key)
        info["signature_valid"] = tree or cp.verify(parsed, key)
        info["kind"] = "tree" if tree else "head"  # docs/audit.md, Transparency log
    click.echo(json.dumps(info, indent=2))
    sys.exit(0 if info.get("signature_valid", True) else 1)


@main.command()
@click.option("--store", type=_PATH, help="Local store directory holding the record and its tiles.")
@_es_reader("Elasticsearch URL holding the record and its tiles.")
@click.option("--chain", help="Chain id. [default: the only chain present]")
@click.option("--seq", type=click.IntRange(min=0), required=True, help="The record to prove.")
@click.option("--checkpoint", "note", type=_PATH,
              help="Tree checkpoint note to prove against. [default: the newest stored, with its cosignatures]")
@click.option("--out", type=_PATH, help="Write the receipt here. [default: stdout]")
def prove(store: Path | None, conn: EsOptions, chain: str | None, seq: int, note: Path | None,
          out: Path | None) -> None:
    """Write an offline receipt (C2SP tlog-proof) that record SEQ is in the signed, witnessed log."""
    from audit.prove_cli import run_prove

    sys.exit(run_prove(store, conn, chain, seq, note, out))


@main.command(name="verify-proof")
@click.argument("receipt", type=_PATH)
@click.option("--public-key", type=_PATH, required=True, help="The log's Ed25519 public key (PEM or note vkey).")
@click.option("--witness-key", "witness_keys", multiple=True,
              help="A witness verifier key (name+id+base64), or a file holding one; repeatable.")
@click.option("--quorum", type=click.IntRange(min=0),
              help="How many of the --witness-key witnesses must have cosigned. [default: all of them]")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify_proof(receipt: Path, public_key: Path, witness_keys: tuple[str, ...], quorum: int | None,
                 as_json: bool) -> None:
    """Check a receipt with nothing else at hand; exit 0 valid, 1 invalid (with the reason), 2 unreadable input."""
    from audit.prove_cli import run_verify_proof

    sys.exit(run_verify_proof(receipt, public_key, witness_keys, quorum, as_json))


@main.command(name="witness-key")
@click.option("--public-key", type=_PATH, required=True, help="The log's Ed25519 public key (PEM or note vkey).")
@click.option("--chain", required=True, help="Chain id: the log's origin is tee-audit/<chain>.")
def witness_key(public_key: Path, chain: str) -> None:
    """Print the origin and the verifier key a witness must know to cosign this chain's tree checkpoints."""
    from audit import checkpoint as cp

    try:
        key = cp.load_public(public_key)
    except cp.CheckpointError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    origin = cp.origin_for(chain)
    click.echo(f"origin: {origin}\nvkey: {cp.vkey(origin, key)}")
