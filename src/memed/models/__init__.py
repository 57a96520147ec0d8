"""Served models: the model-family registry, manifests, the registry of model sets on disk, ONNX Runtime
sessions and the ONNX graph builders (torch definitions and export need the ``train`` extra)."""

from memed.models.families import FAMILIES, FAMILY_NAMES, Family, family, load_part
from memed.models.manifest import Manifest, ModelEntry, ModelKind
from memed.models.registry import ModelSet, latest_id, list_sets, load_model_set, resolve, write_model_set
from memed.models.runtime import ModelRunner

__all__ = [
    "FAMILIES",
    "FAMILY_NAMES",
    "Family",
    "Manifest",
    "ModelEntry",
    "ModelKind",
    "ModelRunner",
    "ModelSet",
    "family",
    "latest_id",
    "list_sets",
    "load_model_set",
    "load_part",
    "resolve",
    "write_model_set",
]
