"""Check the GPU training path without Ray: AMP training, padding invariance, loss vs CPU, ONNX
parity, a DDP step through a real process group, and samples/s at batch sizes 32..4096.

    python scripts/gpu_check.py --device auto|cuda|cpu [--quick] [--amp auto|off|bf16|fp16] [--out FILE.json]

Needs only torch, onnx / onnxruntime and the Ray-free core (``tagging``): it never imports Ray,
so it runs on a bare GPU node. It trains the default char-CNN (``tagging.config.ModelConfig()``)
on generated data (``tagging.synth``) with the epoch function the Ray Train worker calls
(``tagging.training.train_epoch``), then checks, each with a stated tolerance:

- ``loss_vs_cpu``: the per-epoch training loss against a CPU fp32 run of the same seed, same
  batches (relative difference). Two CPU fp32 runs must agree to 1e-6; a CUDA or AMP run to 0.1
  (autocast rounding, TF32 convolutions and a different dropout RNG stream on the GPU).
- ``padding_invariance``: a text scored alone vs padded to max_length inside a batch of longer
  texts (fp32 eval on the device, max abs probability difference): 1e-5 on CPU, 1e-3 on CUDA
  (TF32 convolutions pick other algorithms per shape).
- ``onnx_parity``: ONNX exported from the trained weights (``tagging.export``) vs PyTorch on
  ONNX Runtime CPU, max abs probability difference <= ``tagging.export.PARITY_TOLERANCE``.
- ``ddp_step``: a 1-rank process group (NCCL on CUDA, gloo on CPU; 127.0.0.1 and a free port),
  one DDP-wrapped training step through it: finite loss, weights changed.

Then it prints samples/s (training step and inference) per batch size as a table (on CUDA next
to the same on this host's CPU), and writes a JSON summary with ``--out``. Exit status 0 when
every check passed, 1 when one failed (or the device is missing), 2 for bad usage.

``--amp auto``: bf16 autocast on CUDA where supported, else fp16 with a GradScaler (what the Ray
worker uses on GPU today); fp32 on CPU (``--amp bf16`` tries CPU bf16 autocast).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import socket
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout (no install needed on a bare node)
    sys.path.insert(0, str(ROOT))

from tagging.config import TrainConfig, load_config  # noqa: E402
from tagging.model import CharCNN  # noqa: E402
from tagging.vocab import CharVocab  # noqa: E402

LOSS_TOL_EXACT = 1e-6  # two CPU fp32 runs of the same seed: the same arithmetic
LOSS_TOL_AMP = 0.1  # CUDA / autocast vs CPU fp32: relative, per epoch
INVARIANCE_TOL = {"cpu": 1e-5, "cuda": 1e-3}


def train(model: torch.nn.Module, texts: list[str], y: np.ndarray, vocab: CharVocab, cfg: TrainConfig,
          device: torch.device, amp: str, epochs: int, seed: int) -> list[float]:
    """Train ``model`` (already on ``device``) for ``epochs``; returns the mean loss per epoch.

    The only function here that calls training code, so it can follow a refactor of the epoch:
    the Ray worker's pieces (``make_loss``, AdamW, ``training_batches`` with concatenation
    augmentation, ``train_epoch``). ``amp``: 'off' (fp32), 'bf16' (``train_epoch``'s bf16 autocast) or
    'fp16' (its float16 autocast with a GradScaler, CUDA only).
    """
    from tagging.augment import with_concat
    from tagging.training import make_loss, train_epoch, training_batches

    rng = np.random.default_rng(seed)
    loss_fn = make_loss(y.sum(0), len(y), cfg.imbalance)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    losses = []
    for _ in range(epochs):
        epoch_texts, epoch_y = with_concat(texts, y, cfg.concat_rate, rng)
        batches = training_batches(epoch_texts, epoch_y, vocab, cfg.batch_size, cfg.bucket_batches, cfg.model.max_length, rng, rng)
        loss, _seen = train_epoch(model, batches, loss_fn, optimizer, device, amp_dtype, scaler)
        losses.append(float(loss))
    return losses


def new_model(vocab: CharVocab, num_labels: int, cfg: TrainConfig, device: torch.device, seed: int) -> CharCNN:
    """The default char-CNN with seeded initial weights (created on CPU, so every device starts alike)."""
    torch.manual_seed(seed)
    return CharCNN(vocab.size, num_labels, cfg.model).to(device)


def generated_split(rows: int, seed: int, cfg: TrainConfig, work: Path):
    """Train / validation texts and targets of a generated corpus, through the core's data path."""
    from tagging.local import prepare_local
    from tagging.synth import generate_corpus, write_corpus

    path = work / "synth.parquet"
    write_corpus(generate_corpus(rows, seed=seed), str(path))
    prepared = prepare_local([str(path)], cfg)
    tr, va = prepared.split("train"), prepared.split("val")
    return (tr["text"].tolist(), np.stack(tr["y"].to_numpy()).astype(np.float32),
            va["text"].tolist(), len(prepared.labels.labels))


@torch.no_grad()
def probs(model: torch.nn.Module, ids: np.ndarray, device: torch.device) -> np.ndarray:
    model.eval()
    return torch.sigmoid(model(torch.from_numpy(ids).to(device)).float()).cpu().numpy()


def padding_invariance(model: torch.nn.Module, texts: list[str], vocab: CharVocab, max_length: int,
                       device: torch.device) -> float:
    """Max |p(alone) - p(in a batch of longer texts, padded to max_length)| over a few short texts."""
    by_length = sorted(texts, key=len)
    short, long = by_length[:8], by_length[-7:]
    worst = 0.0
    for text in short:
        alone, _ = vocab.encode([text], max_length)
        batch, _ = vocab.encode([text] + long, max_length)
        batch = np.pad(batch, ((0, 0), (0, max_length - batch.shape[1])))
        worst = max(worst, float(np.abs(probs(model, alone, device)[0] - probs(model, batch, device)[0]).max()))
    return worst


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_step(vocab: CharVocab, texts: list[str], y: np.ndarray, cfg: TrainConfig, device: torch.device,
             amp: str, seed: int) -> dict:
    """One DDP-wrapped training step through a real 1-rank process group (NCCL / gloo)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    backend = "nccl" if device.type == "cuda" else "gloo"
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(free_port())
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        model = new_model(vocab, y.shape[1], cfg, device, seed)
        before = [p.detach().clone() for p in model.parameters()]
        # The Ray worker's wrapping (ray.train.torch.prepare_model with gradient_as_bucket_view).
        ddp = DistributedDataParallel(model, device_ids=[device.index or 0] if device.type == "cuda" else None,
                                      gradient_as_bucket_view=True)
        rows = min(len(texts), cfg.batch_size)
        losses = train(ddp, texts[:rows], y[:rows], vocab, replace(cfg, concat_rate=0.0), device, amp, 1, seed)
        changed = any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
        return {"backend": backend, "loss": losses[0], "weights_changed": changed,
                "passed": math.isfinite(losses[0]) and changed}
    finally:
        dist.destroy_process_group()


def throughput(vocab: CharVocab, texts: list[str], y: np.ndarray, cfg: TrainConfig, device: torch.device,
               amp: str, batch_sizes: list[int], steps: int) -> list[dict]:
    """Samples/s of a training step and of inference at each batch size (generated texts, cycled)."""
    out = []
    for bs in batch_sizes:
        reps = -(-bs * steps // len(texts))
        t_rows, y_rows = (texts * reps)[: bs * steps], np.concatenate([y] * reps)[: bs * steps]
        bcfg = replace(cfg, batch_size=bs, concat_rate=0.0)
        model = new_model(vocab, y.shape[1], cfg, device, 0)
        train(model, t_rows[:bs], y_rows[:bs], vocab, bcfg, device, amp, 1, 0)  # warm-up: kernels, allocator
        sync(device)
        t0 = time.perf_counter()
        train(model, t_rows, y_rows, vocab, bcfg, device, amp, 1, 0)
        sync(device)
        train_sps = bs * steps / (time.perf_counter() - t0)
        ids, _ = vocab.encode(t_rows[:bs], cfg.model.max_length)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16) \
            if amp != "off" else contextlib.nullcontext()
        with autocast:
            probs(model, ids, device)
            sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                probs(model, ids, device)
            sync(device)
        infer_sps = bs * steps / (time.perf_counter() - t0)
        out.append({"device": device.type, "batch_size": bs, "train_samples_per_s": round(train_sps, 1),
                    "infer_samples_per_s": round(infer_sps, 1), "mean_chars": round(float(np.mean([len(t) for t in t_rows])), 1)})
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolve(device_arg: str, amp_arg: str) -> tuple[torch.device, str]:
    if device_arg == "auto":
        device_arg = "cuda" if torch.cuda.is_available() else "cpu"
    if device_arg == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no CUDA device "
                         f"(torch {torch.__version__}, CUDA build {torch.version.cuda})")
    device = torch.device("cuda:0" if device_arg == "cuda" else "cpu")
    amp = amp_arg
    if amp == "auto":
        amp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device.type == "cuda" else "off"
    if amp == "fp16" and device.type != "cuda":
        raise SystemExit("error: --amp fp16 needs CUDA (GradScaler); use --amp bf16 or off on CPU")
    return device, amp


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    ap.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"], default="auto",
                    help="autocast: auto = bf16 on CUDA where supported, else fp16 + GradScaler; off on CPU")
    ap.add_argument("--quick", action="store_true", help="small data, 2 epochs, batch sizes 32..512 (a CPU test)")
    ap.add_argument("--rows", type=int, help="generated rows (default 20000 on CUDA, 3000 on CPU, 500 with --quick)")
    ap.add_argument("--epochs", type=int, help="training epochs (default 5; 2 with --quick)")
    ap.add_argument("--batch-sizes", help="comma-separated (default 32,64,...,4096; 32,128,512 with --quick)")
    ap.add_argument("--steps", type=int, help="timed steps per batch size (default 10 on CUDA, 3 on CPU, 1 with --quick)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-cpu-baseline", action="store_true", help="on CUDA, skip the CPU columns of the table")
    ap.add_argument("--out", help="write the JSON summary here")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device, amp = resolve(args.device, args.amp)
    cuda = device.type == "cuda"
    rows = args.rows or (500 if args.quick else 20000 if cuda else 3000)
    epochs = args.epochs or (2 if args.quick else 5)
    steps = args.steps or (1 if args.quick else 10 if cuda else 3)
    sizes = [int(s) for s in args.batch_sizes.split(",")] if args.batch_sizes else \
        ([32, 128, 512] if args.quick else [32, 64, 128, 256, 512, 1024, 2048, 4096])
    cfg = load_config(None, {"seed": args.seed})  # the default config: the default model, loss and augmentation
    t_start = time.perf_counter()
    summary: dict = {
        "device": str(device), "amp": amp, "quick": args.quick, "rows": rows, "epochs": epochs,
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(device) if cuda else None, "cpu_threads": torch.get_num_threads(),
        "model": {"num_filters": cfg.model.num_filters, "filter_widths": list(cfg.model.filter_widths),
                  "embedding_dim": cfg.model.embedding_dim, "hidden_dim": cfg.model.hidden_dim},
        "checks": {},
    }
    checks = summary["checks"]

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        texts, y, val_texts, num_labels = generated_split(rows, args.seed, cfg, work)
        vocab = CharVocab.fit(texts)
        summary.update(train_rows=len(texts), labels=num_labels, vocab_size=vocab.size)
        print(f"device {device} ({summary['gpu'] or platform.processor() or 'cpu'}), amp {amp}, torch {torch.__version__}; "
              f"{len(texts)} train rows, {num_labels} labels, {epochs} epochs", flush=True)

        t0 = time.perf_counter()
        model = new_model(vocab, num_labels, cfg, device, args.seed)
        losses = train(model, texts, y, vocab, cfg, device, amp, epochs, args.seed)
        phases = summary["phase_seconds"] = {"train": round(time.perf_counter() - t0, 2)}
        t0 = time.perf_counter()
        cpu = torch.device("cpu")
        reference = train(new_model(vocab, num_labels, cfg, cpu, args.seed), texts, y, vocab, cfg, cpu, "off", epochs, args.seed)
        phases["cpu_reference"] = round(time.perf_counter() - t0, 2)
        exact = not cuda and amp == "off"
        tol = LOSS_TOL_EXACT if exact else LOSS_TOL_AMP
        rel = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses, reference))
        checks["loss_vs_cpu"] = {"passed": bool(rel <= tol), "max_rel_diff": rel, "tolerance": tol,
                                 "loss": losses, "cpu_loss": reference,
                                 "compared": "two CPU fp32 runs" if exact else f"{device.type} {amp} vs CPU fp32"}

        inv = padding_invariance(model, val_texts or texts, vocab, cfg.model.max_length, device)
        checks["padding_invariance"] = {"passed": bool(inv <= INVARIANCE_TOL[device.type]), "max_abs_diff": inv,
                                        "tolerance": INVARIANCE_TOL[device.type], "precision": "fp32 eval"}

        from tagging.export import PARITY_TOLERANCE, ExportError, check_parity, export_onnx

        t0 = time.perf_counter()
        cpu_model = model.to(cpu).eval()
        onnx_path = work / "model.onnx"
        try:
            export_onnx(cpu_model, onnx_path)
            parity = check_parity(cpu_model, onnx_path, val_texts or texts, vocab, cfg.model.max_length)
            checks["onnx_parity"] = {"passed": True, "max_abs_diff": parity, "tolerance": PARITY_TOLERANCE}
        except ExportError as e:
            checks["onnx_parity"] = {"passed": False, "error": str(e), "tolerance": PARITY_TOLERANCE}

        phases["export_and_parity"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        try:
            checks["ddp_step"] = ddp_step(vocab, texts, y, cfg, device, amp, args.seed)
        except Exception as e:  # a broken NCCL / gloo set-up is the finding, not a crash
            checks["ddp_step"] = {"passed": False, "error": f"{type(e).__name__}: {e}"}

        phases["ddp_step"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        table = throughput(vocab, texts, y, cfg, device, amp, sizes, steps)
        if cuda and not args.no_cpu_baseline:
            table += throughput(vocab, texts, y, cfg, cpu, "off", sizes, steps)
        summary["throughput"] = table
        phases["throughput"] = round(time.perf_counter() - t0, 2)

    summary["ray_imported"] = "ray" in sys.modules  # the check must run on a node without Ray
    summary["passed"] = all(c["passed"] for c in checks.values())
    summary["seconds"] = round(time.perf_counter() - t_start, 1)
    print(f"\n{'check':<20} {'result':<6} {'value':>12} {'tolerance':>10}")
    for name, c in checks.items():
        value = c.get("max_rel_diff", c.get("max_abs_diff", c.get("loss")))
        shown = f"{value:.3g}" if isinstance(value, float) else str(c.get("error", value))[:40]
        print(f"{name:<20} {'ok' if c['passed'] else 'FAIL':<6} {shown:>12} {c.get('tolerance', ''):>10}")
    print(f"\n{'device':<7} {'batch':>6} {'train samples/s':>16} {'infer samples/s':>16}")
    for r in table:
        print(f"{r['device']:<7} {r['batch_size']:>6} {r['train_samples_per_s']:>16,.0f} {r['infer_samples_per_s']:>16,.0f}")
    print("\nseconds: " + ", ".join(f"{k} {v}" for k, v in summary["phase_seconds"].items()))
    print(f"\n{'all checks passed' if summary['passed'] else 'FAILED'} in {summary['seconds']} s", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
