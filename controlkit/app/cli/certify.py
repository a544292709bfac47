"""``controlkit certify``: re-check a policy file's certificate against a model file."""

from __future__ import annotations

import click

from controlkit.certify import certify_policy
from controlkit.plant import DesignPlant
from controlkit.policyfile import load_policy_file
from identification.errors import UncertifiedError
from identification.plant import load_model

__all__ = ["command"]


@click.command(name="certify")
@click.argument("policy_path", metavar="POLICY.json", type=click.Path(dir_okay=False))
@click.argument("model_path", metavar="MODEL.json", type=click.Path(dir_okay=False))
def command(policy_path: str, model_path: str) -> None:
    """Re-check POLICY.json's claims against MODEL.json; exit 1 if a claim fails."""
    pf = load_policy_file(policy_path)
    plant = DesignPlant.from_model(load_model(model_path), source=str(model_path))
    cert = certify_policy(pf, plant)
    click.echo(cert.summary())
    if not cert.holds:
        raise UncertifiedError(f"{policy_path} is not certified for {model_path}: {cert.failure_message()}")
    click.echo(f"{policy_path}: certified for {model_path}")
