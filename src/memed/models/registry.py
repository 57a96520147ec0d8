"""The model registry: ``REGISTRY/<model-set-id>/{manifest.json, <model>.onnx}`` and ``REGISTRY/latest``.

Writing is atomic (a temporary folder renamed into place, then ``latest`` replaced by rename). Loading
validates everything before anything is served: the manifest decodes strictly, every file's sha256
matches, every ONNX file opens in ONNX Runtime with the expected inputs and outputs. Any failure raises
:class:`~memed.errors.RegistryError` with the path and the reason.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import msgspec

from memed.errors import RegistryError, SpecMismatchError
from memed.models.families import FAMILIES
from memed.models.manifest import Manifest
from memed.models.runtime import ModelRunner

MANIFEST = "manifest.json"
LATEST = "latest"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_model_set(registry: Path, manifest: Manifest, files: dict[str, bytes]) -> Path:
    """Write one model set (``files``: name → ONNX bytes) and point ``latest`` at it."""
    registry.mkdir(parents=True, exist_ok=True)
    final = registry / manifest.model_set_id
    if final.exists():
        raise RegistryError(f"{final}: a model set with this id already exists")
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=registry))
    try:
        for name, blob in files.items():
            (tmp / name).write_bytes(blob)
        (tmp / MANIFEST).write_bytes(msgspec.json.format(msgspec.json.encode(manifest), indent=2))
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    set_latest(registry, manifest.model_set_id)
    return final


def set_latest(registry: Path, model_set_id: str) -> None:
    """Point ``latest`` at a set, atomically; a temporary file of its own per writer, so that processes
    training into one registry at once (parallel backtest folds) never move each other's file."""
    fd, name = tempfile.mkstemp(prefix=f".{LATEST}.", suffix=".tmp", dir=registry)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(model_set_id + "\n")
    os.replace(name, registry / LATEST)


def latest_id(registry: Path) -> str:
    path = registry / LATEST
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError:
        raise RegistryError(f"{path}: no 'latest' model set in this registry") from None
    except UnicodeDecodeError:
        raise RegistryError(f"{path}: not UTF-8 text naming a model set") from None
    if not value or "/" in value or value.startswith("."):
        raise RegistryError(f"{path}: does not name a model set")
    return value


def resolve(path: Path) -> Path:
    """A model-set folder, or a registry folder (its ``latest`` set)."""
    if (path / MANIFEST).exists():
        return path
    if (path / LATEST).exists():
        return path / latest_id(path)
    raise RegistryError(f"{path}: neither a model set (no {MANIFEST}) nor a registry (no {LATEST})")


def read_manifest(set_dir: Path) -> Manifest:
    path = set_dir / MANIFEST
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read manifest: {exc.strerror}") from None
    try:
        return msgspec.json.decode(raw, type=Manifest)
    except msgspec.DecodeError as exc:
        raise RegistryError(f"{path}: invalid manifest: {exc}") from None


def list_sets(registry: Path) -> list[Manifest]:
    """Every readable model set of a registry, oldest first (unreadable ones are skipped)."""
    if not registry.is_dir():
        raise RegistryError(f"{registry}: not a folder")
    found = []
    for child in sorted(registry.iterdir()):
        if child.is_dir() and not child.name.startswith(".") and (child / MANIFEST).exists():
            try:
                found.append(read_manifest(child))
            except RegistryError:
                continue
    return sorted(found, key=lambda m: m.created)


@dataclass
class ModelSet:
    """A validated model set, its sessions open."""

    path: Path
    manifest: Manifest
    runners: dict[str, ModelRunner]

    @property
    def id(self) -> str:
        return self.manifest.model_set_id


def load_model_set(
    path: Path,
    *,
    expect_spec_hash: str | None = None,
    models: tuple[str, ...] | None = None,
    threads: int = 1,
) -> ModelSet:
    """Validate and open a model set (or a registry's latest). Refuses a feature-spec hash mismatch."""
    set_dir = resolve(Path(path))
    manifest = read_manifest(set_dir)
    if expect_spec_hash is not None and manifest.feature_spec_hash != expect_spec_hash:
        raise SpecMismatchError(
            f"{set_dir}: model set was trained on feature spec {manifest.feature_spec_hash}, "
            f"the running feature engine is {expect_spec_hash}"
        )
    runners: dict[str, ModelRunner] = {}
    for entry in manifest.models:
        if models is not None and entry.name not in models:
            continue
        file = set_dir / entry.file
        if not file.is_file():
            raise RegistryError(f"{file}: model file missing")
        if sha256_file(file) != entry.sha256:
            raise RegistryError(f"{file}: sha256 does not match the manifest (corrupt or replaced)")
        runners[entry.name] = ModelRunner.load(entry, file, len(manifest.horizons), threads,
                                               n_features=len(manifest.feature_names))  # fmt: skip
        known = FAMILIES.get(entry.name)
        if known is None or known.kind != entry.kind:
            raise RegistryError(
                f"{set_dir}: model {entry.name!r} ({entry.kind}) is not a known family "
                f"({', '.join(f'{f.name} ({f.kind})' for f in FAMILIES.values())})"
            )
    if not runners:
        raise RegistryError(f"{set_dir}: no model to serve")
    return ModelSet(set_dir, manifest, runners)
