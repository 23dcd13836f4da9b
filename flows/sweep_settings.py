"""Where a spec's sweep is tracked and registered, without importing Prefect or MLflow (the
`ui`, `promote` and `rollback` verbs need these names and nothing else)."""

from __future__ import annotations

from enginesweep.build_configs.loading import ResolvedSpec


def registered_model_name(resolved: ResolvedSpec) -> str:
    """The registry's model name: the spec's, else the model's short name."""
    return resolved.spec.registry.model_name or resolved.spec.model.slug


def tracking_uri(resolved: ResolvedSpec) -> str:
    """The spec's MLflow URI, else sqlite under the workspace."""
    workspace = resolved.spec.workspace.resolve()
    return resolved.spec.tracking.mlflow_uri or f"sqlite:///{workspace / 'mlflow.db'}"
