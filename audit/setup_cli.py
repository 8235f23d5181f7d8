"""``tee-audit setup``: the administrator's one-time Elasticsearch set-up (audit/setup.py), as a click command.

Kept apart from audit/cli.py so that the command and its options live in one place; cli.py only registers it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

_PATH = click.Path(path_type=Path)


@click.command()
@click.option("--es", required=True, help="Elasticsearch URL (http:// or https://).")
@click.option("--es.ca-file", "ca_file", type=_PATH, help="CA bundle (PEM) that signs the server certificate.")
@click.option("--es.api-key-file", "api_key_file", type=_PATH, help="File holding an API key of the set-up role.")
@click.option("--es.username", "username", help="User for basic auth; it needs the tee_setup role.")
@click.option("--es.password-file", "password_file", type=_PATH, help="File holding that user's password.")
@click.option("--es.namespace", "namespace", default="default", show_default=True,
              help="Data stream namespace the shippers use (logs-tee.audit-<namespace>); run once per namespace.")
@click.option("--es.retention", "retention", default="90d", show_default=True,
              help="How long the records stream keeps records (data stream lifecycle data_retention). Checkpoints "
                   "are kept without limit.")
def setup(es: str, ca_file: Path | None, api_key_file: Path | None, username: str | None,
          password_file: Path | None, namespace: str, retention: str) -> None:
    """Prepare Elasticsearch for tee-audit, with an administrator's credential (role tee_setup).

    Checks the cluster's version and installs the index templates of the records stream (with its retention) and
    of the checkpoint stream, as this version of tee-audit expects them; sets the retention of a records stream
    that already exists. Idempotent: prints one line per thing checked or done. `ship` never writes templates
    (its credential can only append) and refuses to start until this has run. Exit 0 when set up, 2 otherwise.
    """
    from audit.setup import install
    from audit.sinks import NotSetUp
    from audit.sinks.elasticsearch import EsError, connect

    if password_file and not username:
        raise click.UsageError("--es.password-file needs --es.username")
    try:
        client = connect(es, ca_file, api_key_file, username, password_file)
        for line in install(client, es, namespace, retention):
            click.echo(line)
    except (EsError, NotSetUp, OSError) as exc:
        hint = getattr(exc, "hint", "")
        click.echo(f"error: set-up failed: {exc}{f' ({hint})' if hint else ''}", err=True)
        sys.exit(2)
