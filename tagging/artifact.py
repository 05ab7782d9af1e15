"""The model artifact: one self-describing, checksummed directory.

Layout::

    manifest.json     schema version, versions, data hash, config, labels, vocabulary,
                      max length, thresholds, metrics, sha256 of every other file
    model.pt          state dict (load with weights_only=True)
    model.onnx        dynamo export, dynamic batch and length
    model.unpadded.onnx  the same model for batches without padding (no PAD mask; what the
                      batch scorer runs on exact-length batches: tagging.export.export_unpadded)
    vocab.json labels.json thresholds.json metrics.json splits.json history.json

Everything that evaluates or scores loads through ``load_artifact``, which verifies every
checksum and refuses a changed, missing or mismatched file with a clear message. The artifact
also says how to read data for its model: ``normalize`` (texts as the model reads them),
``tags_file`` / ``tag_index`` (aliases and parents of its training run) and ``labeled_rows``
(labeled data in its label space, with each row's split). Prediction: tagging.evaluation.Predictor
(PyTorch) and tagging.onnx_scoring.OnnxScorer (ONNX Runtime).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from tagging import __version__
from tagging.config import TrainConfig, from_dict, to_dict
from tagging.labels import LabelSpace, TagIndex
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


@functools.cache
def git_sha() -> str | None:
    """HEAD of the git checkout this package's code is tracked in (an editable install), else None."""
    pkg = Path(__file__).parent
    try:
        tracked = subprocess.run(["git", "-C", str(pkg), "ls-files", "--error-unmatch", "__init__.py"], capture_output=True, timeout=10)
        head = subprocess.run(["git", "-C", str(pkg), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() or None if tracked.returncode == 0 and head.returncode == 0 else None


def code_version() -> dict[str, str | None]:
    """The code that trains: package version and git sha (None outside a git checkout)."""
    return {"tagging": __version__, "git_sha": git_sha()}


def package_versions() -> dict[str, str | None]:
    out = {**code_version(), "python": sys.version.split()[0]}
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

    def unpadded_variant(self, precision: str) -> Path | None:
        """The ``unpadded`` graph of ``onnx_variant(precision)`` (tagging.export.export_unpadded:
        the same scores on batches without padding, cheaper), or None where the artifact has none
        (written before it existed, or int8 quantized before it)."""
        self.onnx_variant(precision)  # refuses what onnx_variant refuses
        entry = self.manifest["onnx"] if precision == "fp32" else self.manifest["int8"]
        name = entry.get("unpadded", {}).get("file")
        return self.path / name if name else None

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

    @property
    def splits(self) -> dict[str, str]:
        """id -> 'train' | 'val' | 'test' of every row the model was trained on (splits.json)."""
        return self.read_json("splits.json")

    def normalize(self, texts: Iterable[str]) -> list[str]:
        """Raw texts as the model reads them: normalized as its training data was."""
        from tagging.text import normalize

        cfg = self.config.data
        return [normalize(t, lowercase=cfg.lowercase, remove_stopwords=cfg.remove_stopwords) for t in texts]

    def tags_file(self, override: str | Path | None = None) -> str | None:
        """The tags file (aliases, parents) to label data with: ``override`` if given (it must
        exist), else the training run's when it can still be reached from here, else None."""
        from tagging.readers import file_exists

        if override:
            if not file_exists(str(override)):
                raise FileNotFoundError(f"{override}: no such tags file")
            return str(override)
        own = self.config.data.tags_file
        return own if own and file_exists(own) else None

    def tag_index(self, override: str | Path | None = None) -> TagIndex:
        """The index of ``tags_file(override)``; empty without a tags file."""
        from tagging.readers import load_tag_index

        return load_tag_index(self.tags_file(override))

    def labeled_rows(self, data: Sequence[str], tags_file: str | Path | None = None) -> "LabeledRows":
        """The labeled rows of ``data`` in this model's label space, read as in training.

        Rows are read and normalized by the core readers with the artifact's data settings; the
        first valid occurrence of an id wins (later ones count as rejected); tags are mapped
        through ``tags_file(tags_file)``; rows without a tag in the label space are counted and
        left out. Rows come in id order, each with its split in ``splits.json`` (None if absent).
        """
        import pandas as pd

        from tagging.dataset import data_hash
        from tagging.readers import Row, check_columns, load_tag_index, plan_units, read_unit

        cfg = self.config.data
        units = plan_units(list(data))
        check_columns(units, cfg, need_tags=True)
        used_tags_file = self.tags_file(tags_file)
        index = load_tag_index(used_tags_file)
        first: dict[str, Row] = {}
        read = 0
        for unit in units:
            for item in read_unit(unit, cfg, need_tags=True):
                read += 1
                if isinstance(item, Row) and item.id not in first:
                    first[item.id] = item
        ids = sorted(first)
        tags = [tuple(index.canonical(first[i].tags, cfg.expand_parents)) for i in ids]
        y = self.labels.encode(tags)
        keep = np.flatnonzero(y.sum(1) > 0)
        ids, texts, tags = [ids[k] for k in keep], [first[ids[k]].text for k in keep], [tags[k] for k in keep]
        splits = self.splits
        accounting = {"rows_read": read, "rows_used": len(ids), "rows_rejected": read - len(first),
                      "rows_unlabeled": len(first) - len(ids)}
        return LabeledRows(ids, texts, y[keep], [splits.get(i) for i in ids], accounting,
                           data_hash(pd.DataFrame({"id": ids, "text": texts, "tags": tags})), used_tags_file, index)


@dataclass(frozen=True)
class LabeledRows:
    """Labeled rows of some data in an artifact's label space (``Artifact.labeled_rows``)."""

    ids: list[str]  # in id order
    texts: list[str]  # normalized, as the model reads them
    y: np.ndarray  # float32 [rows, labels], every row with at least one tag
    splits: list[str | None]  # each row's split in the artifact (splits.json); None: not in it
    accounting: dict  # rows_read = rows_used + rows_rejected (incl. duplicate ids) + rows_unlabeled
    data_hash: str  # as tagging.dataset.data_hash: the artifact's own when this is its training data
    tags_file: str | None  # the tags file the tags were mapped through
    index: TagIndex  # its aliases and parents

    def split(self, name: str) -> "LabeledRows":
        """The rows of one split ('train', 'val', 'test'); refused when ``data`` holds none of them."""
        keep = [k for k, s in enumerate(self.splits) if s == name]
        if not keep:
            raise ValueError(f"--data holds none of the artifact's {name} rows (splits.json); pass the data it was trained on")
        return LabeledRows([self.ids[k] for k in keep], [self.texts[k] for k in keep], self.y[keep],
                           [name] * len(keep), self.accounting, self.data_hash, self.tags_file, self.index)


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
        unpadded = write_unpadded(model, stage, parity_texts, vocab, config.model.max_length)
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
            "onnx": {"file": "model.onnx", "opset": 20, "input": "ids", "output": "logits", "parity_max_abs_diff": parity,
                     "unpadded": unpadded},
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


def write_unpadded(model, folder: Path, parity_texts: Sequence[str], vocab: CharVocab, max_length: int) -> dict:
    """Export ``model``'s unpadded graph into ``folder`` and check it against ``model`` on unpadded
    batches; returns the manifest's ``onnx.unpadded`` entry."""
    from tagging.export import POOL_BLOCK, UNPADDED_FILE, check_parity, export_unpadded

    export_unpadded(model, folder / UNPADDED_FILE)
    parity = check_parity(model, folder / UNPADDED_FILE, parity_texts, vocab, max_length, unpadded=True)
    return {"file": UNPADDED_FILE, "pool_block": POOL_BLOCK, "parity_max_abs_diff": parity}


def add_unpadded_graph(art: Artifact, parity_texts: Sequence[str]) -> Artifact:
    """An artifact written before the unpadded graph existed, with it added from its model.pt
    (parity-checked on ``parity_texts`` as a new artifact's is): `tagging quantize` does this."""
    with tempfile.TemporaryDirectory(dir=art.path) as tmp:
        entry = write_unpadded(art.load_model().eval(), Path(tmp), parity_texts, art.vocab, art.max_length)
        shutil.move(str(Path(tmp) / entry["file"]), art.path / entry["file"])
    return update_manifest(art, {entry["file"]: art.path / entry["file"]}, {"onnx": {**art.manifest["onnx"], "unpadded": entry}})


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
