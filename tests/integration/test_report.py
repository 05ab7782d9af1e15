"""The evaluation report, end to end: baselines -> `tagging report` -> opened in real headless Chromium.

Chromium comes from Debian (`apt-get install chromium`); the set-up installs it when it is missing,
so a fresh CI machine runs this test. It is skipped only where apt is not available at all.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from tagging.metrics import evaluate

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars"]


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a chromium binary; installs Debian's package when missing."""
    path = _find_chromium()
    if path:
        return path
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.skip("chromium is not installed and apt-get is not available to install it")
    cmd = [apt] if os.geteuid() == 0 else (["sudo", "-n", apt] if shutil.which("sudo") else None)
    if cmd is None:
        pytest.fail("chromium is missing and apt-get needs root (no sudo)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["update", "-q"], ["install", "-y", "-q", "--no-install-recommends", "chromium"]):
        proc = subprocess.run(cmd + args, capture_output=True, text=True, env=env, timeout=1200)
        assert proc.returncode == 0, f"apt-get {' '.join(args)} failed: {proc.stderr[-2000:]}"
    path = _find_chromium()
    assert path, "apt-get installed chromium but no chromium binary is on PATH"
    return path


@pytest.fixture(scope="module")
def built(local_artifact, synth_parquet, tmp_path_factory):
    """Baselines on the artifact's split, then the report through the CLI."""
    from typer.testing import CliRunner

    from tagging.cli import app

    root = tmp_path_factory.mktemp("report")
    runner = CliRunner()
    res = runner.invoke(app, ["baselines", "--data", synth_parquet, "--model", str(local_artifact.path),
                              "--out", str(root / "baselines"), "--c", "1"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["report", "--model", str(local_artifact.path), "--data", synth_parquet,
                              "--baselines", str(root / "baselines"), "--out", str(root / "out")])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    return root / "out", summary


def test_metrics_json(built, local_artifact):
    out, summary = built
    m = json.loads((out / "metrics.json").read_text())
    labels = list(local_artifact.labels.labels)
    # same test ids, model and thresholds as at training time -> the artifact's own test metrics
    stored = local_artifact.manifest["metrics"]
    for key, value in stored["overall"].items():
        assert m["overall"][key] == pytest.approx(value, abs=1e-6), key
    assert set(m["per_class"]) == set(labels)
    reference = evaluate(np.zeros((2, len(labels))), np.zeros((2, len(labels))), labels)
    assert set(m["overall"]) == set(reference["overall"])
    assert m["evaluated_on"]["data_hash_matches_artifact"] is True
    assert m["evaluated_on"]["test_ids_found"] == m["evaluated_on"]["test_ids_in_artifact"] == m["overall"]["num_samples"]
    assert set(m["baselines"]) == {"random", "prior_random", "rule_based", "tfidf_svm"}
    assert m["baselines_run"]["same_labels_as_model"] is True and m["baselines_run"]["same_data_as_model"] is True
    assert m["slices"]["all"]["num_samples"] == m["overall"]["num_samples"]
    assert {"short_text (<60 chars)", "no_alias_of_true_tag_in_text"} <= set(m["slices"])
    assert len(m["worst_classes"]) == 5 and set(m["example_errors"]) == set(m["worst_classes"])
    b = m["behavioral"]
    assert b["passed"] + b["failed"] + b["skipped"] == len(b["cases"]) > 0
    assert summary["behavioral"] == {k: b[k] for k in ("passed", "failed", "skipped")}
    assert m["throughput_docs_per_s"] > 0 and m["training"]["epochs"] == len(local_artifact.read_json("history.json"))


def test_page_is_self_contained(built):
    page = (built[0] / "report.html").read_text()
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing fetched from elsewhere
    assert page.count('src="data:image/png;base64,') == 3  # PR curves, threshold sweep, training curves


def test_report_renders_in_chromium(built, chromium, tmp_path):
    url = (built[0] / "report.html").resolve().as_uri()
    common = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000"]
    dom = subprocess.run(common + ["--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert len(re.findall(r"<table\b", html)) >= 5
    assert "char-CNN (this model)" in html and "tfidf_svm" in html and "Behavioral checks" in html
    images = re.findall(r'<img\b[^>]*\bsrc="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 3 and all(len(b) > 5000 for b in images)

    shot = tmp_path / "report.png"
    proc = subprocess.run(common + [f"--screenshot={shot}", url], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape[:2] == (2000, 1280)
    colors = np.unique(img.reshape(-1, 3), axis=0)
    assert len(colors) > 50  # text, tables and plots, not a blank page
    dark = (img.sum(axis=2) < 200).mean()
    assert 0.002 < dark < 0.5  # some dark text on a light page
    keep = os.environ.get("TAGGING_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def test_report_without_data_uses_the_manifest(local_artifact, tmp_path):
    from tagging.report import build_report

    m = build_report(local_artifact.path, tmp_path / "r", behavior=False)
    assert m["overall"] == local_artifact.manifest["metrics"]["overall"]
    page = (tmp_path / "r" / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 1 and "pass --data" in page
    assert "behavioral" not in m


def test_slices_are_boolean_masks():
    from tagging.baselines import TagMatcher
    from tagging.labels import LabelSpace, TagIndex
    from tagging.report import no_alias_mask, short_text_mask

    texts = ["yolo for cars", "object detection with a long description of anchors and boxes and more", "nlp"]
    y = np.array([[0, 1], [0, 1], [1, 0]], dtype=np.float32)
    labels = LabelSpace(("natural-language-processing", "object-detection"))
    matcher = TagMatcher(TagIndex.from_records([{"tag": "natural-language-processing", "aliases": ["nlp"]}]), labels.labels)
    short = short_text_mask(texts, 20)
    assert short.dtype == bool and short.tolist() == [True, False, True]
    assert no_alias_mask(texts, y, labels, matcher).tolist() == [True, False, False]


def test_report_cli_fails_cleanly(tmp_path):
    from typer.testing import CliRunner

    from tagging.cli import app

    res = CliRunner().invoke(app, ["report", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and res.stderr.startswith("error:") and len(res.stderr.strip().splitlines()) == 1
