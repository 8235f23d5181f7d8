"""``tee-exporter attest``: placeholder until the attestation verifier lands."""

import click


@click.command()
def attest() -> None:
    """Verify attestation evidence against vendor roots and a policy."""
    raise click.ClickException("not implemented yet")
