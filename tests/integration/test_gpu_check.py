"""scripts/gpu_check.py in its CPU mode, so the GPU check cannot rot on machines without a GPU.

It trains (two short CPU runs of the default char-CNN), exports ONNX and starts a gloo process
group, hence the integration tier; no Ray is started (the script must not import it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


def test_gpu_check_cpu_quick_passes(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["passed"] and summary["device"] == "cpu" and summary["amp"] == "off"
    assert set(summary["checks"]) == {"loss_vs_cpu", "padding_invariance", "onnx_parity", "ddp_step"}
    assert all(c["passed"] for c in summary["checks"].values()), summary["checks"]
    assert summary["checks"]["loss_vs_cpu"]["max_rel_diff"] <= 1e-6  # two CPU fp32 runs agree tightly
    assert summary["checks"]["ddp_step"]["backend"] == "gloo"
    assert not summary["ray_imported"]
    assert [r["batch_size"] for r in summary["throughput"]] == [32, 128, 512]
    assert all(r["train_samples_per_s"] > 0 and r["infer_samples_per_s"] > 0 for r in summary["throughput"])
    assert "all checks passed" in proc.stdout


def test_gpu_check_refuses_missing_cuda():
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cuda", "--quick"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "no CUDA device" in proc.stderr
