"""The evaluation report: one self-contained HTML page plus ``metrics.json``.

What a person deciding whether to trust a model wants in one place: overall and per-class
metrics next to the baselines (``tagging baselines``), per-class precision-recall curves with the
chosen thresholds marked, threshold vs precision/recall, the worst classes with example errors,
slices (plain boolean masks over the evaluated rows), the training curves of the run, and the
behavioral checks (invariance, directional, minimum functionality; also run by
``pytest -m model --model DIR`` from the same case table).

Without ``--data`` the page uses the metrics stored in the artifact (the test split at training
time); with it, the artifact's test ids (splits.json) are read from the data and scored, which
adds everything that needs per-row scores (curves, errors, slices).

Plots are PNG from matplotlib's ``Figure`` (Agg canvas; no pyplot state), embedded as base64.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagging.evaluation import Predictor
from tagging.labels import LabelSpace
from tagging.metrics import evaluate, weighted_f1
from tagging.thresholds import GRID, apply_thresholds

SHORT_TEXT_CHARS = 60
"""Slice "short text": normalized texts shorter than this many characters."""

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- behavioral checks


@dataclass(frozen=True)
class BehaviorCase:
    """One behavioral check. ``kind``:

    * ``mft`` (minimum functionality): ``text`` must get ``tag``;
    * ``invariance``: ``text`` and ``other`` (case change, small typo) get the same tag set;
    * ``directional``: adding a cue (``other`` = text + cue) raises ``tag``'s probability.

    Texts are generic ML-project descriptions whose tags exist both in the real projects data
    and in the synthetic corpus (tagging.synth.TAGS); a case whose tag the model lacks is skipped.
    """

    kind: str
    name: str
    text: str
    tag: str | None = None
    other: str | None = None


BEHAVIOR_CASES: tuple[BehaviorCase, ...] = (
    BehaviorCase("mft", "yolo", "Object detection with YOLO: predicting bounding boxes around objects", "object-detection"),
    BehaviorCase("mft", "image-classification", "Image classification on ImageNet with a convolutional neural network", "computer-vision"),
    BehaviorCase("mft", "nlp", "Natural language processing: text classification and sentiment analysis of sentences", "natural-language-processing"),
    BehaviorCase("mft", "rl", "Reinforcement learning agent trained with Q-learning to maximize the reward in Atari games", "reinforcement-learning"),
    BehaviorCase("mft", "gnn", "Graph neural networks for node classification on citation graphs", "graph-neural-networks"),
    BehaviorCase("mft", "time-series", "Time series forecasting of sensor data with ARIMA and LSTM models", "time-series"),
    BehaviorCase("mft", "gan", "Generative adversarial networks (GAN): a generator and a discriminator for image synthesis", "generative-adversarial-networks"),
    BehaviorCase("mft", "transformers", "Fine-tuning BERT and other transformers with self-attention", "transformers"),
    BehaviorCase("mft", "pytorch", "A PyTorch implementation using torch.nn modules and the PyTorch DataLoader", "pytorch"),
    BehaviorCase("mft", "tensorflow", "A TensorFlow and Keras tutorial with tf.keras layers", "tensorflow"),
    BehaviorCase("invariance", "case-upper", "Object detection with YOLO and bounding boxes", None,
                 "OBJECT DETECTION WITH YOLO AND BOUNDING BOXES"),
    BehaviorCase("invariance", "case-title", "fine-tuning bert transformers for question answering", None,
                 "Fine-Tuning BERT Transformers For Question Answering"),
    BehaviorCase("invariance", "typo-filler", "A simple implementation of image segmentation with a convolutional network", None,
                 "A simple implmentation of image segmentation with a convolutional network"),
    BehaviorCase("invariance", "typo-filler-2", "Tutorial on reinforcement learning for playing games", None,
                 "Tutorail on reinforcement learning for playing games"),
    BehaviorCase("directional", "add-pytorch", "Image classification with a convolutional neural network", "pytorch",
                 "Image classification with a convolutional neural network in PyTorch"),
    BehaviorCase("directional", "add-pytorch-nlp", "Text classification with recurrent networks", "pytorch",
                 "Text classification with recurrent networks using pytorch"),
    BehaviorCase("directional", "add-tensorflow", "Object detection for self-driving cars", "tensorflow",
                 "Object detection for self-driving cars with TensorFlow"),
)


def check_case(predictor: Predictor, case: BehaviorCase) -> dict:
    """``{kind, name, tag, status: pass|fail|skip, detail}`` for one case."""
    out = {"kind": case.kind, "name": case.name, "tag": case.tag, "text": case.text}
    if case.tag is not None and case.tag not in predictor.labels:
        return {**out, "status": "skip", "detail": f"the model has no tag {case.tag!r}"}
    if case.kind == "mft":
        j = predictor.labels.index(case.tag)
        p = float(predictor.probs([case.text])[0, j])
        t = float(predictor.art.thresholds[j])
        ok = p >= t
        detail = f"p({case.tag}) {p:.3f} {'>=' if ok else '<'} threshold {t:.2f}"
    elif case.kind == "invariance":
        a, b = map(set, predictor.tags([case.text, case.other]))
        ok = a == b
        detail = (f"same {len(a)} tags: {', '.join(sorted(a))}" if ok
                  else f"gained {sorted(b - a)}, lost {sorted(a - b)}")
    elif case.kind == "directional":
        j = predictor.labels.index(case.tag)
        p = predictor.probs([case.text, case.other])[:, j]
        ok = bool(p[1] > p[0])
        detail = f"p({case.tag}) {p[0]:.3f} -> {p[1]:.3f}"
    else:
        raise ValueError(f"unknown behavioral case kind {case.kind!r}")
    return {**out, "status": "pass" if ok else "fail", "detail": detail}


def run_behavior(predictor: Predictor, cases: Sequence[BehaviorCase] = BEHAVIOR_CASES) -> dict:
    """Every case in-process: ``{passed, failed, skipped, by_kind, cases: [...]}``."""
    results = [check_case(predictor, c) for c in cases]
    by_kind: dict[str, dict[str, int]] = {}
    for r in results:
        k = by_kind.setdefault(r["kind"], {"pass": 0, "fail": 0, "skip": 0})
        k[r["status"]] += 1
    count = lambda s: sum(r["status"] == s for r in results)  # noqa: E731
    return {"passed": count("pass"), "failed": count("fail"), "skipped": count("skip"), "by_kind": by_kind, "cases": results}


# ----------------------------------------------------------------------------- evaluation rows and slices


def short_text_mask(texts: Sequence[str], max_chars: int = SHORT_TEXT_CHARS) -> np.ndarray:
    """bool [rows]: texts shorter than ``max_chars`` characters."""
    return np.fromiter((len(t) < max_chars for t in texts), dtype=bool, count=len(texts))


def no_alias_mask(texts: Sequence[str], y: np.ndarray, labels: LabelSpace, matcher) -> np.ndarray:
    """bool [rows]: no true tag of the row has its name or an alias (stemmed) in the text."""
    return np.fromiter((not (set(labels.decode(row)) & matcher.matched(text)) for text, row in zip(texts, y)),
                       dtype=bool, count=len(texts))


def slice_metrics(y: np.ndarray, pred: np.ndarray, labels: Sequence[str], masks: dict[str, np.ndarray]) -> dict:
    """``{slice: {"num_samples", "fraction", "overall"}}``; ``overall`` as in tagging.metrics.evaluate."""
    out = {}
    for name, mask in masks.items():
        n = int(mask.sum())
        entry = {"num_samples": n, "fraction": round(n / max(len(mask), 1), 4)}
        if n:
            entry["overall"] = evaluate(y[mask], pred[mask], labels)["overall"]
        out[name] = entry
    return out


def worst_classes(per_class: dict, k: int = 5) -> list[str]:
    """The ``k`` classes with support and the lowest F1 (ties: more support first)."""
    items = [(m["f1"], -m["support"], tag) for tag, m in per_class.items() if m["support"] > 0]
    return [tag for _, _, tag in sorted(items)[:k]]


def example_errors(texts, ids, y, probs, pred, labels: LabelSpace, tag, k=3) -> dict:
    """For one tag: missed rows (lowest scores first) and false alarms (highest scores first)."""
    j = labels.labels.index(tag)
    fn = np.flatnonzero(y[:, j].astype(bool) & ~pred[:, j])
    fp = np.flatnonzero(~y[:, j].astype(bool) & pred[:, j])
    fn = fn[np.argsort(probs[fn, j], kind="stable")][:k]
    fp = fp[np.argsort(-probs[fp, j], kind="stable")][:k]

    def row(i):
        return {"id": ids[i], "text": texts[i], "score": round(float(probs[i, j]), 4),
                "true": labels.decode(y[i]), "predicted": labels.decode(pred[i])}

    return {"missed": [row(i) for i in fn], "false_alarms": [row(i) for i in fp]}


# ----------------------------------------------------------------------------- plots


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def plot_pr_curves(y: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, labels: Sequence[str]) -> str:
    """One small precision-recall panel per class with support; the chosen threshold is a red dot."""
    from sklearn.metrics import precision_recall_curve

    present = [j for j in range(len(labels)) if y[:, j].sum() > 0]
    cols = 6
    rows = max(1, -(-len(present) // cols))
    fig = _figure(2.3 * cols, 2.1 * rows)
    for k, j in enumerate(present):
        ax = fig.add_subplot(rows, cols, k + 1)
        p, r, _ = precision_recall_curve(y[:, j], probs[:, j])
        ax.plot(r, p, lw=1.2)
        hit = probs[:, j] >= thresholds[j]
        tp = float((hit & (y[:, j] > 0)).sum())
        ax.plot([tp / max(y[:, j].sum(), 1)], [tp / max(hit.sum(), 1) if hit.any() else 1.0], "o", color="red", ms=5)
        ax.set_title(f"{labels[j]} (n={int(y[:, j].sum())})", fontsize=7)
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.05)
        ax.tick_params(labelsize=6)
    fig.suptitle("Precision (y) vs recall (x) per class; red dot = chosen threshold", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def plot_threshold_sweep(y: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, global_t: float) -> str:
    """Weighted precision / recall / F1 when one threshold is applied to every class."""
    from sklearn.metrics import precision_recall_fscore_support

    ps, rs, fs = [], [], []
    yb = y.astype(bool)
    for t in GRID:
        p, r, f, _ = precision_recall_fscore_support(yb, probs >= t, average="weighted", zero_division=0)
        ps.append(p)
        rs.append(r)
        fs.append(f)
    chosen_f1 = weighted_f1(yb, apply_thresholds(probs, thresholds))
    fig = _figure(6.5, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(GRID, ps, label="precision")
    ax.plot(GRID, rs, label="recall")
    ax.plot(GRID, fs, label="F1", lw=2)
    ax.axvline(global_t, color="gray", ls="--", lw=1, label=f"global threshold {global_t:.2f}")
    ax.axhline(chosen_f1, color="red", ls=":", lw=1, label=f"F1 with the chosen per-class thresholds {chosen_f1:.3f}")
    ax.set_xlabel("threshold (same for every class)")
    ax.set_ylabel("weighted metric")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Threshold vs precision / recall", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def plot_training(history: list[dict], best_epoch: int | None) -> str | None:
    if not history:
        return None
    epochs = [h.get("epoch", i) for i, h in enumerate(history)]
    fig = _figure(8, 3.2)
    ax = fig.add_subplot(1, 2, 1)
    for key in ("train_loss", "val_loss"):
        if all(key in h for h in history):
            ax.plot(epochs, [h[key] for h in history], marker=".", label=key)
    ax.set_xlabel("epoch")
    ax.set_title("loss", fontsize=10)
    ax.legend(fontsize=7)
    ax2 = fig.add_subplot(1, 2, 2)
    if all("val_f1" in h for h in history):
        ax2.plot(epochs, [h["val_f1"] for h in history], marker=".", color="tab:green", label="val weighted F1")
    if best_epoch is not None and best_epoch >= 0:
        for a in (ax, ax2):
            a.axvline(best_epoch, color="gray", ls="--", lw=1)
    ax2.set_xlabel("epoch")
    ax2.set_title("validation F1 (dashed: best epoch kept)", fontsize=10)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


# ----------------------------------------------------------------------------- report


def build_report(model_dir: str | Path, out_dir: str | Path, data: Sequence[str] | None = None,
                 baselines_dir: str | Path | None = None, behavior: bool = True, tags_file: str | Path | None = None) -> dict:
    """Write ``out_dir/report.html`` and ``out_dir/metrics.json``; returns the metrics dict.

    ``tags_file`` (aliases/parents) defaults to the training run's, when it exists here.
    """
    predictor = Predictor(model_dir)
    art = predictor.art
    labels = list(art.labels.labels)
    manifest_metrics = art.manifest["metrics"]
    report: dict = {"model_version": art.model_version, "artifact": str(art.path), "artifact_sha256": art.sha,
                    "labels": labels, "thresholds": dict(zip(labels, map(float, art.thresholds))),
                    "global_threshold": float(art.manifest.get("global_threshold", 0.5))}
    plots: dict[str, str | None] = {}
    if data:
        from tagging.baselines import TagMatcher, throughput

        rows = art.labeled_rows(data, tags_file).split("test")
        probs = predictor.probs(rows.texts, normalized=True)
        pred = apply_thresholds(probs, art.thresholds)
        metrics = evaluate(rows.y, pred, labels)
        report.update(metrics)
        report["evaluated_on"] = {"source": "data", "inputs": list(data), "tags_file": rows.tags_file,
                                  "test_ids_in_artifact": sum(s == "test" for s in art.splits.values()),
                                  "test_ids_found": len(rows.ids),
                                  "data_hash_matches_artifact": rows.data_hash == art.manifest.get("data_hash"),
                                  "split": "test", "num_samples": len(rows.ids)}
        report["throughput_docs_per_s"] = throughput(lambda t: predictor.probs(t, normalized=True), rows.texts)
        matcher = TagMatcher(rows.index, labels)
        masks = {f"short_text (<{SHORT_TEXT_CHARS} chars)": short_text_mask(rows.texts),
                 "no_alias_of_true_tag_in_text": no_alias_mask(rows.texts, rows.y, art.labels, matcher)}
        masks["all"] = np.ones(len(rows.texts), dtype=bool)
        report["slices"] = slice_metrics(rows.y, pred, labels, masks)
        report["worst_classes"] = worst_classes(metrics["per_class"])
        report["example_errors"] = {t: example_errors(rows.texts, rows.ids, rows.y, probs, pred, art.labels, t)
                                    for t in report["worst_classes"]}
        logger.info("plotting")
        plots["pr"] = plot_pr_curves(rows.y, probs, art.thresholds, labels)
        plots["sweep"] = plot_threshold_sweep(rows.y, probs, art.thresholds, report["global_threshold"])
    else:
        report["overall"], report["per_class"] = manifest_metrics["overall"], manifest_metrics["per_class"]
        report["evaluated_on"] = {"source": "artifact manifest (test split at training time)",
                                  "split": manifest_metrics.get("split", "test"),
                                  "num_samples": manifest_metrics["overall"].get("num_samples")}
        report["worst_classes"] = worst_classes(report["per_class"])
    history = art.read_json("history.json") if (art.path / "history.json").is_file() else []
    history = [h for h in history if h.get("member", 0) == 0]  # an ensemble: its first member's curves
    best_epoch = (art.manifest.get("run") or {}).get("best_epoch")
    plots["training"] = plot_training(history, best_epoch)
    report["training"] = {"epochs": len(history), "best_epoch": best_epoch,
                          "best_val_f1": max((h.get("val_f1", 0.0) for h in history), default=None)}
    if baselines_dir:
        from tagging.baselines import load_baselines

        results, run = load_baselines(baselines_dir)
        same_labels = run.get("labels") == labels if run else None
        report["baselines"] = {name: {"overall": m["overall"], "val_f1": m.get("val_f1"),
                                      "throughput_docs_per_s": m.get("throughput_docs_per_s"),
                                      "per_class_f1": {t: v["f1"] for t, v in m.get("per_class", {}).items()}}
                               for name, m in results.items()}
        report["baselines_run"] = {**{k: v for k, v in run.items() if k != "labels"}, "same_labels_as_model": same_labels,
                                   "same_data_as_model": (run.get("data_hash") == art.manifest.get("data_hash")) if run else None}
    if behavior:
        report["behavioral"] = run_behavior(predictor)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (out / "report.html").write_text(render_html(report, plots), encoding="utf-8")
    return report


# ----------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;color:#222;padding:0 16px}
h1{font-size:22px} h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;font-size:13px} th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left} tr.model td{background:#eef6ff;font-weight:600}
.pass{color:#17803d;font-weight:600} .fail{color:#b3261e;font-weight:600} .skip{color:#777}
.note{color:#555;font-size:13px} img{max-width:100%;border:1px solid #eee} .bad{background:#fdecea}
"""


def _e(x) -> str:
    return html.escape(str(x))


def _f(x, digits=3) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence], text_cols: Sequence[int] = (0,),
           row_class: Sequence[str] | None = None) -> str:
    """An HTML table; cells are already escaped; ``text_cols`` are left-aligned, the rest (numbers) right."""
    head = "".join(f'<th class="l">{_e(h)}</th>' if i in text_cols else f"<th>{_e(h)}</th>" for i, h in enumerate(header))
    body = []
    for k, row in enumerate(rows):
        cls = f' class="{row_class[k]}"' if row_class and row_class[k] else ""
        cells = "".join(f'<td class="l">{c}</td>' if i in text_cols else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(b64: str | None, alt: str) -> str:
    if not b64:
        return f'<p class="note">({_e(alt)}: not available)</p>'
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{b64}">'


def render_html(r: dict, plots: dict) -> str:
    o = r["overall"]
    ev = r["evaluated_on"]
    parts = [f"<h1>Evaluation report: {_e(r['model_version'])}</h1>",
             f'<p class="note">artifact {_e(r["artifact"])} (manifest sha256 {_e(r["artifact_sha256"][:12])}); '
             f'{len(r["labels"])} tags; evaluated on: {_e(ev.get("source"))}, split {_e(ev.get("split"))}, '
             f'{_e(ev.get("num_samples"))} rows'
             + (f'; data hash matches the artifact: {_e(ev.get("data_hash_matches_artifact"))}' if "data_hash_matches_artifact" in ev else "")
             + "</p>"]
    # model vs baselines
    rows, classes = [], []
    tput = r.get("throughput_docs_per_s")
    rows.append(["char-CNN (this model)", _f(o["precision"]), _f(o["recall"]), _f(o["f1"]), _f(o["micro_f1"]),
                 _f(o["macro_f1"]), "", f"{tput:,.0f}" if tput else ""])
    classes.append("model")
    for name, b in (r.get("baselines") or {}).items():
        bo = b["overall"]
        bt = b.get("throughput_docs_per_s")
        rows.append([_e(name), _f(bo["precision"]), _f(bo["recall"]), _f(bo["f1"]), _f(bo["micro_f1"]), _f(bo["macro_f1"]),
                     _f(b.get("val_f1")), f"{bt:,.0f}" if bt else ""])
        classes.append("")
    parts.append("<h2>Overall: model and baselines (test split)</h2>")
    parts.append(_table(["model", "precision", "recall", "F1 (weighted)", "micro F1", "macro F1", "val F1", "docs/s"], rows,
                        row_class=classes))
    if "baselines_run" in r:
        br = r["baselines_run"]
        parts.append(f'<p class="note">baselines: split from {_e(br.get("split_source"))}; same labels as the model: '
                     f'{_e(br.get("same_labels_as_model"))}; same data: {_e(br.get("same_data_as_model"))}. '
                     "docs/s: one process, on the test texts.</p>")
    elif not r.get("baselines"):
        parts.append('<p class="note">No baselines given (run <code>tagging baselines</code> and pass --baselines).</p>')
    # behavioral
    if "behavioral" in r:
        bh = r["behavioral"]
        parts.append(f"<h2>Behavioral checks: {bh['passed']} passed, {bh['failed']} failed, {bh['skipped']} skipped</h2>")
        parts.append(_table(["kind", "case", "tag", "result", "detail"],
                            [[_e(c["kind"]), _e(c["name"]), _e(c["tag"] or ""), f'<span class="{c["status"]}">{c["status"]}</span>',
                              _e(c["detail"])] for c in bh["cases"]], text_cols=range(5)))
    # slices
    if "slices" in r:
        parts.append("<h2>Slices</h2>")
        srows = []
        for name, s in r["slices"].items():
            so = s.get("overall") or {}
            srows.append([_e(name), s["num_samples"], _f(s["fraction"], 2), _f(so.get("precision")), _f(so.get("recall")),
                          _f(so.get("f1"))])
        parts.append(_table(["slice", "rows", "fraction", "precision", "recall", "F1 (weighted)"], srows))
    # per class
    parts.append("<h2>Per class</h2>")
    base_names = list((r.get("baselines") or {}).keys())
    worst = set(r.get("worst_classes", []))
    pc_rows, pc_cls = [], []
    for tag, m in sorted(r["per_class"].items()):
        extra = [_f((r["baselines"][b]["per_class_f1"] or {}).get(tag)) for b in base_names]
        pc_rows.append([_e(tag), m["support"], _f(m["precision"]), _f(m["recall"]), _f(m["f1"]),
                        _f(r["thresholds"].get(tag), 2), *extra])
        pc_cls.append("bad" if tag in worst else "")
    parts.append(_table(["tag", "support", "precision", "recall", "F1", "threshold", *[f"F1 {b}" for b in base_names]],
                        pc_rows, row_class=pc_cls))
    # worst classes and errors
    parts.append("<h2>Worst classes and example errors</h2>")
    parts.append(f'<p class="note">Lowest F1 among classes with test support: {_e(", ".join(r.get("worst_classes", [])))}.</p>')
    for tag, ex in (r.get("example_errors") or {}).items():
        parts.append(f"<h3>{_e(tag)}</h3>")
        erows = []
        for kind, items in (("missed", ex["missed"]), ("false alarm", ex["false_alarms"])):
            for it in items:
                erows.append([kind, _e(it["text"]), _f(it["score"]), _e(", ".join(it["true"])), _e(", ".join(it["predicted"]))])
        parts.append(_table(["error", "text", "score", "true tags", "predicted"], erows, text_cols=(0, 1, 3, 4)) if erows
                     else '<p class="note">no errors</p>')
    if not r.get("example_errors"):
        parts.append('<p class="note">Example errors, curves and slices need per-row scores: pass --data.</p>')
    parts.append("<h2>Precision-recall per class</h2>" + _img(plots.get("pr"), "precision-recall curves"))
    parts.append("<h2>Threshold vs precision / recall</h2>" + _img(plots.get("sweep"), "threshold sweep"))
    tr = r.get("training", {})
    parts.append(f"<h2>Training curves</h2><p class=\"note\">{_e(tr.get('epochs'))} epochs; best epoch {_e(tr.get('best_epoch'))}.</p>"
                 + _img(plots.get("training"), "training curves"))
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Report {_e(r['model_version'])}</title>"
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")

