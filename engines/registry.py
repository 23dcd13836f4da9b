"""Promotion to the MLflow Model Registry, with aliases (never the deprecated stages).

Promoting a trial logs its engine bundle (verified against its manifest first) as the `engine`
artifact of the trial's run, registers `runs:/<run>/engine` as a new model version (a plain
directory cannot go through `mlflow.register_model`, which looks for a logged model), tags the
version with the manifest's content hash and the key metrics, points `champion` at it and moves
the previous champion to `previous`. `rollback` swaps them back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from enginesweep.engines.manifest import verify_bundle

PREVIOUS = "previous"


class PromotionError(RuntimeError):
    """A promotion or rollback that cannot be done (and why)."""


@dataclass(frozen=True)
class Promotion:
    """What a promotion or rollback changed."""

    model_name: str
    version: str
    alias: str
    previous_version: str | None
    registered: bool = True
    """False when the alias already pointed at this very engine and nothing changed."""


def _alias_version(client, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def promote(
    client,
    *,
    model_name: str,
    run_id: str,
    bundle_dir: Path,
    alias: str = "champion",
    tags: dict[str, str] | None = None,
    allow_unfinished: bool = False,
) -> Promotion:
    """Register the bundle of `run_id` as a new version of `model_name` and move `alias` to it.
    A bundle with the content hash of the version `alias` already points to is not registered
    again: that version is returned unchanged. A run that did not finish (a failed trial) is
    refused unless `allow_unfinished` (`enginesweep promote --force`)."""
    from mlflow.exceptions import MlflowException

    manifest = verify_bundle(bundle_dir)  # refuse a bundle that no longer matches its manifest
    run = client.get_run(run_id)
    if run.info.status != "FINISHED" and not allow_unfinished:
        raise PromotionError(f"run {run_id} is {run.info.status}: only a finished trial can be promoted")
    current = _alias_version(client, model_name, alias)
    if (
        current is not None
        and client.get_model_version(model_name, current).tags.get("content_hash") == manifest.content_hash
    ):
        # The same engine again (an unchanged re-run): no new version, the aliases stay.
        return Promotion(
            model_name=model_name,
            version=current,
            alias=alias,
            previous_version=_alias_version(client, model_name, PREVIOUS),
            registered=False,
        )
    client.log_artifacts(run_id, str(bundle_dir), "engine")
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(model_name, description="Engines promoted by enginesweep")
    version = str(
        client.create_model_version(
            model_name,
            source=f"runs:/{run_id}/engine",
            run_id=run_id,
            tags={
                "content_hash": manifest.content_hash,
                "slug": manifest.slug,
                "stack": manifest.stack,
                **(tags or {}),
            },
        ).version
    )  # MLflow returns an int here and strings elsewhere
    previous = _alias_version(client, model_name, alias)
    if previous is not None and previous != version:
        client.set_registered_model_alias(model_name, PREVIOUS, previous)
    client.set_registered_model_alias(model_name, alias, version)
    return Promotion(model_name=model_name, version=version, alias=alias, previous_version=previous)


def rollback(client, *, model_name: str, alias: str = "champion") -> Promotion:
    """Point `alias` back at the `previous` version, and `previous` at the one it replaces."""
    current = _alias_version(client, model_name, alias)
    previous = _alias_version(client, model_name, PREVIOUS)
    if previous is None:
        raise PromotionError(f"{model_name} has no '{PREVIOUS}' version to roll back to")
    client.set_registered_model_alias(model_name, alias, previous)
    if current is not None:
        client.set_registered_model_alias(model_name, PREVIOUS, current)
    return Promotion(model_name=model_name, version=previous, alias=alias, previous_version=current)
