"""``memed features``: the feature specification and feature computation."""

from __future__ import annotations

import click


@click.group("features")
def features_group() -> None:
    """Inspect the feature specification and compute features."""
