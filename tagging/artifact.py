"""The model artifact: one self-describing, checksummed directory.

Layout::

    manifest.json     schema version, versions, data hash, config, labels, vocabulary,
                      max length, thresholds, metrics, sha256 of every other file
    model.pt          state dict (load with weights_only=True)
    model.onnx        dynamo export, dynamic batch and length
    vocab.json labels.json thresholds.json metrics.json splits.json history.json

Everything that evaluates or scores loads through ``load_artifact``, which verifies every
checksum and refuses a changed, missing or mismatched file with a clear message.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from tagging import __version__
from tagging.config import TrainConfig, from_dict, to_dict
from tagging.labels import LabelSpace
from tagging.vocab import CharVocab

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


class ArtifactError(RuntimeError):
    """The artifact is missing, corrupted, or does not match this version of tagging."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_versions() -> dict[str, str]:
    out = {"tagging": __version__, "python": sys.version.split()[0]}
    for name in ("ray", "torch", "onnx", "onnxruntime", "numpy", "pyarrow"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class Artifact:
    path: Path
    manifest: dict
    config: TrainConfig
    labels: LabelSpace
    vocab: CharVocab
    thresholds: np.ndarray  # float32 [labels]

    @property
    def model_version(self) -> str:
        return self.manifest["model_version"]

    @property
    def sha(self) -> str:
        """sha256 of the manifest: identifies this exact artifact."""
        return sha256_file(self.path / MANIFEST)

    @property
    def max_length(self) -> int:
        return int(self.manifest["max_length"])

    @property
    def onnx_path(self) -> Path:
        return self.path / "model.onnx"

    def onnx_variant(self, precision: str) -> Path:
        """The ONNX file for 'fp32' or 'int8' (refused if int8 was not produced or failed its gate)."""
        if precision == "fp32":
            return self.onnx_path
        info = self.manifest.get("int8")
        if precision != "int8":
            raise ArtifactError(f"unknown precision {precision!r} (fp32 or int8)")
        if not info:
            raise ArtifactError(f"{self.path}: no int8 model; run `tagging quantize --model {self.path}` first")
        if not info.get("accepted"):
            raise ArtifactError(
                f"{self.path}: int8 model refused: validation weighted F1 {info['f1']:.4f} vs fp32 "
                f"{info['fp32_f1']:.4f} (allowed drop {info['max_drop']})"
            )
        return self.path / info["file"]

    def load_model(self):
        import torch

        from tagging.model import build_model

        model = build_model(self.vocab.size, len(self.labels), self.config.model)
        state = torch.load(self.path / "model.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        model.eval()
        return model

    def read_json(self, name: str):
        return json.loads((self.path / name).read_text("utf-8"))


def save_artifact(
    out_dir: str | Path,
    *,
    config: TrainConfig,
    labels: LabelSpace,
    vocab: CharVocab,
    state_dict: dict,
    model,
    thresholds: np.ndarray,
    global_threshold: float,
    metrics: dict,
    splits: dict[str, str],
    history: list[dict],
    data_hash: str,
    model_version: str,
    parity_texts: list[str],
    extra: dict | None = None,
) -> Artifact:
    """Write the artifact to a staging directory, export + check ONNX, then publish atomically."""
    import torch

    from tagging.export import check_parity, export_onnx

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ArtifactError(f"{out}: exists and is not empty; choose a new --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        torch.save(state_dict, stage / "model.pt")
        model.load_state_dict(state_dict)
        model.eval()
        export_onnx(model, stage / "model.onnx")
        parity = check_parity(model, stage / "model.onnx", parity_texts, vocab, config.model.max_length)
        _write_json(stage / "vocab.json", vocab.to_json())
        _write_json(stage / "labels.json", list(labels.labels))
        _write_json(stage / "thresholds.json", {"global": global_threshold, "per_class": dict(zip(labels.labels, map(float, thresholds)))})
        _write_json(stage / "metrics.json", metrics)
        _write_json(stage / "splits.json", dict(sorted(splits.items())))
        _write_json(stage / "history.json", history)
        files = {p.name: sha256_file(p) for p in sorted(stage.iterdir()) if p.is_file()}
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "kind": "tagging.char_cnn",
            "model_version": model_version,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": package_versions(),
            "data_hash": data_hash,
            "config": to_dict(config),
            "labels": list(labels.labels),
            "vocab_size": vocab.size,
            "max_length": config.model.max_length,
            "thresholds": [float(t) for t in thresholds],
            "global_threshold": float(global_threshold),
            "metrics": metrics,
            "onnx": {"file": "model.onnx", "opset": 20, "input": "ids", "output": "logits", "parity_max_abs_diff": parity},
            "files": files,
            **(extra or {}),
        }
        _write_json(stage / MANIFEST, manifest)
        if out.exists():
            out.rmdir()
        os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return load_artifact(out)


def update_manifest(art: Artifact, new_files: dict[str, Path], updates: dict) -> Artifact:
    """Add files and manifest entries to an existing artifact (e.g. an int8 model), re-checksummed."""
    manifest = dict(art.manifest)
    files = dict(manifest["files"])
    for name, path in new_files.items():
        files[name] = sha256_file(path)
    manifest["files"] = files
    manifest.update(updates)
    tmp = art.path / (MANIFEST + ".tmp")
    _write_json(tmp, manifest)
    os.replace(tmp, art.path / MANIFEST)
    return load_artifact(art.path)


def load_artifact(path: str | Path) -> Artifact:
    """Load and verify an artifact; raises ArtifactError naming the problem."""
    root = Path(path)
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise ArtifactError(f"{root}: not a model artifact (no {MANIFEST})")
    try:
        manifest = json.loads(mpath.read_text("utf-8"))
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{mpath}: corrupted manifest ({exc.msg})") from None
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ArtifactError(f"{root}: artifact schema version {version!r}, this tagging reads {SCHEMA_VERSION}")
    for name, expected in sorted(manifest.get("files", {}).items()):
        fpath = root / name
        if not fpath.is_file():
            raise ArtifactError(f"{root}: file {name} listed in the manifest is missing")
        actual = sha256_file(fpath)
        if actual != expected:
            raise ArtifactError(f"{root}: {name} was changed or corrupted (sha256 {actual[:12]}…, manifest says {expected[:12]}…)")
    labels = LabelSpace(tuple(json.loads((root / "labels.json").read_text("utf-8"))))
    if list(labels.labels) != manifest["labels"]:
        raise ArtifactError(f"{root}: labels.json does not match the manifest's label order")
    vocab = CharVocab.from_json(json.loads((root / "vocab.json").read_text("utf-8")))
    if vocab.size != manifest["vocab_size"]:
        raise ArtifactError(f"{root}: vocab.json does not match the manifest's vocabulary size")
    thresholds = np.asarray(manifest["thresholds"], dtype=np.float32)
    if thresholds.shape != (len(labels),):
        raise ArtifactError(f"{root}: {len(thresholds)} thresholds for {len(labels)} labels")
    config = from_dict(manifest["config"])
    return Artifact(root, manifest, config, labels, vocab, thresholds)
