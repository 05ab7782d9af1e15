"""Baselines on the char-CNN's own split and label space, scored with the same metrics schema.

The ladder every step of model complexity is justified against:

* ``random``: every tag independently with probability 0.5;
* ``prior_random``: every tag independently with its training-split frequency;
* ``rule_based``: a tag is predicted when its name or one of its aliases (tags file) appears in
  the text, Porter-stemmed on both sides; every ancestor of a matched tag is added (parents);
* ``tfidf_svm`` / ``tfidf_logreg``: TF-IDF of word 1-2-grams + char_wb 2-5-grams, one-vs-rest
  LinearSVC / LogisticRegression; C and class weighting chosen on validation weighted F1, with
  decision thresholds fitted on validation by ``tagging.thresholds.fit_thresholds`` (the same
  per-class thresholds with global fallback as the char-CNN) and applied by ``apply_thresholds``.

Splits: ``load_split_data`` runs the same read/prepare path as training (``tagging.dataset.prepare``
with the config's seed), so split membership by id is the one the CNN gets; with an artifact, the
rows, labels and split membership come from the artifact itself (``Artifact.labeled_rows``).

Results: ``{name: {"overall", "per_class", ...}}`` where ``overall``/``per_class`` are exactly
``tagging.metrics.evaluate``'s, plus ``params``, ``val_f1`` and ``throughput_docs_per_s`` (test
texts, one process, after fitting).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tagging.config import TrainConfig
from tagging.labels import LabelSpace, TagIndex
from tagging.metrics import evaluate, weighted_f1
from tagging.thresholds import apply_thresholds, fit_thresholds

_TOKEN = re.compile(r"[a-z0-9]+")
SPLITS = ("train", "val", "test")

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- data


@dataclass
class SplitData:
    """Normalized texts and multi-hot targets per split, with the label space and tag index."""

    labels: LabelSpace
    texts: dict[str, list[str]]  # split -> normalized texts, in id order
    y: dict[str, np.ndarray]  # split -> float32 [rows, labels]
    ids: dict[str, list[str]]
    index: TagIndex = field(default_factory=TagIndex)
    info: dict = field(default_factory=dict)  # where the split came from, counts, data hash


def load_split_data(data: Sequence[str], cfg: TrainConfig, model_dir: str | None = None) -> SplitData:
    """The CNN's train/val/test rows: prepared as in training, or an artifact's own (splits.json).

    With ``model_dir``, rows are labeled through ``cfg.data.tags_file`` (the command passes the
    artifact's own, or ``--tags``)."""
    if model_dir is not None:
        from tagging.artifact import load_artifact

        art = load_artifact(model_dir)
        rows = art.labeled_rows(data, cfg.data.tags_file)
        parts = {name: rows.split(name) for name in SPLITS}
        split = SplitData(art.labels, {k: v.texts for k, v in parts.items()}, {k: v.y for k, v in parts.items()},
                          {k: v.ids for k, v in parts.items()}, rows.index)
        source, data_hash = f"artifact {art.model_version} ({art.path})", rows.data_hash
        extra = {"rows_not_in_artifact_splits": sum(s is None for s in rows.splits)}
    else:
        from tagging.dataset import prepare
        from tagging.local import read_rows_local  # training's in-process reader
        from tagging.readers import load_label_inputs

        index, fixed = load_label_inputs(cfg.data)
        p = prepare(*read_rows_local(data, cfg), cfg.data, cfg.seed, index, fixed)
        parts = {name: p.split(name) for name in SPLITS}
        for name, part in parts.items():
            if len(part) == 0:
                raise ValueError(f"the {name} split is empty")
        split = SplitData(p.labels, {k: v["text"].tolist() for k, v in parts.items()},
                          {k: np.stack(v["y"].to_numpy()).astype(np.float32) for k, v in parts.items()},
                          {k: v["id"].astype(str).tolist() for k, v in parts.items()}, index)
        source, data_hash, extra = "prepare(seed)", p.data_hash, {}
    split.info = {"split_source": source, "data_hash": data_hash, "seed": cfg.seed,
                  "counts": {k: len(v) for k, v in split.texts.items()}, "labels": list(split.labels.labels), **extra}
    return split


# ----------------------------------------------------------------------------- rules


@functools.lru_cache(maxsize=1)
def _stemmer():
    from nltk.stem import PorterStemmer  # rule-based; needs no NLTK data download

    return PorterStemmer()


@functools.lru_cache(maxsize=65536)
def stem(word: str) -> str:
    return _stemmer().stem(word)


def stem_tokens(text: str) -> tuple[str, ...]:
    """Lowercased alphanumeric tokens, Porter-stemmed ("Tensorflow.js" -> ("tensorflow", "js"))."""
    return tuple(stem(t) for t in _TOKEN.findall(text.lower()))


class TagMatcher:
    """Finds tags whose name or alias occurs in a text as a stemmed token phrase.

    Surface forms: every tag and alias of the tags file, plus every label name (so it works
    without a tags file); dashes are word breaks ("computer-vision" ~ "computer vision").
    """

    def __init__(self, index: TagIndex, labels: Iterable[str] = ()) -> None:
        self.index = index
        self.phrases: dict[tuple[str, ...], set[str]] = {}
        forms = dict(index.alias_to_tag)
        for tag in labels:
            forms.setdefault(tag, tag)
        for form, tag in forms.items():
            key = stem_tokens(form)
            if key:
                self.phrases.setdefault(key, set()).add(tag)
        self.lengths = sorted({len(k) for k in self.phrases})

    def matched(self, text: str) -> set[str]:
        """Tags (canonical) with a surface form in ``text``."""
        toks = stem_tokens(text)
        out: set[str] = set()
        for n in self.lengths:
            for i in range(len(toks) - n + 1):
                out |= self.phrases.get(toks[i:i + n], set())
        return out

    def with_ancestors(self, tags: Iterable[str]) -> set[str]:
        return set(self.index.canonical(tags, expand_parents=True))


# ----------------------------------------------------------------------------- baselines


class RandomBaseline:
    """Every tag independently with probability ``p`` (0.5), seeded."""

    name = "random"

    def __init__(self, seed: int = 42) -> None:
        self.seed = seed
        self.prior: np.ndarray | None = None
        self.params: dict = {"p": 0.5}

    def fit(self, split: SplitData) -> None:
        self.prior = np.full(split.y["train"].shape[1], 0.5)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        return rng.random((len(texts), len(self.prior))) < self.prior[None, :]


class PriorRandomBaseline(RandomBaseline):
    """Every tag independently with its training-split frequency."""

    name = "prior_random"

    def fit(self, split: SplitData) -> None:
        self.prior = split.y["train"].mean(0)
        self.params = {"p": "training frequency per tag"}


class RuleBaseline:
    """Aliases + parents from the tags file, stemmed phrase matching; nothing is learned."""

    name = "rule_based"

    def __init__(self) -> None:
        self.params: dict = {"match": "Porter-stemmed token phrases of tag names and aliases", "parents": True}

    def fit(self, split: SplitData) -> None:
        self.labels = split.labels
        self.matcher = TagMatcher(split.index, split.labels.labels)
        self.params["surface_forms"] = len(self.matcher.phrases)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        tags = [sorted(self.matcher.with_ancestors(self.matcher.matched(t))) for t in texts]
        return self.labels.encode(tags).astype(bool)


def make_vectorizer(min_df_char: int = 2):
    """TF-IDF of word 1-2-grams + char_wb 2-5-grams (sublinear tf), concatenated."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    return FeatureUnion([
        ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=1)),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=min_df_char)),
    ])


class TfidfLinearBaseline:
    """TF-IDF + one-vs-rest linear model; C, class_weight and thresholds chosen on validation.

    Scores are ``sigmoid(decision_function)`` for LinearSVC (a monotone map, so the thresholds
    grid of ``tagging.thresholds`` covers margins in about [-3, 3]) and ``predict_proba`` for
    logistic regression.
    """

    def __init__(self, kind: str = "svm", c_grid: Sequence[float] | None = None,
                 class_weights: Sequence[str | None] = (None, "balanced"), min_support: int = 5, seed: int = 42) -> None:
        if kind not in ("svm", "logreg"):
            raise ValueError(f"unknown linear model {kind!r} (svm or logreg)")
        self.kind = kind
        self.name = f"tfidf_{kind}"
        self.c_grid = tuple(c_grid or ((0.1, 0.3, 1.0, 3.0) if kind == "svm" else (3.0, 10.0, 30.0)))
        self.class_weights = tuple(class_weights)
        self.min_support = min_support
        self.seed = seed
        self.params: dict = {}
        self.search: list[dict] = []

    def _model(self, c: float, class_weight: str | None):
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier
        from sklearn.svm import LinearSVC

        if self.kind == "svm":
            est = LinearSVC(C=c, class_weight=class_weight, random_state=self.seed)
        else:
            est = LogisticRegression(C=c, class_weight=class_weight, solver="liblinear", random_state=self.seed)
        return OneVsRestClassifier(est, n_jobs=1)

    def _scores(self, model, x) -> np.ndarray:
        if self.kind == "svm":
            return 1.0 / (1.0 + np.exp(-model.decision_function(x)))
        return model.predict_proba(x)

    def fit(self, split: SplitData) -> None:
        import warnings

        yt, yv = split.y["train"].astype(int), split.y["val"].astype(bool)
        self.vectorizer = make_vectorizer()
        xt = self.vectorizer.fit_transform(split.texts["train"])
        xv = self.vectorizer.transform(split.texts["val"])
        best = None
        for cw in self.class_weights:
            for c in self.c_grid:
                with warnings.catch_warnings():  # a tag absent from train makes a constant predictor
                    warnings.simplefilter("ignore", UserWarning)
                    model = self._model(c, cw).fit(xt, yt)
                sv = self._scores(model, xv)
                thresholds, global_t = fit_thresholds(yv, sv, self.min_support)
                f1 = weighted_f1(yv, apply_thresholds(sv, thresholds))
                self.search.append({"C": c, "class_weight": cw, "val_f1": round(f1, 4)})
                if best is None or f1 > best[0] + 1e-9:
                    best = (f1, c, cw, model, thresholds, global_t)
        f1, c, cw, self.model, self.thresholds, global_t = best
        self.params = {"C": c, "class_weight": cw, "global_threshold": global_t, "features": xt.shape[1],
                       "search": self.search}
        self.val_f1 = f1

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        return self._scores(self.model, self.vectorizer.transform(texts))

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return apply_thresholds(self.scores(texts), self.thresholds)


def default_baselines(seed: int = 42, min_support: int = 5, logreg: bool = False,
                      c_grid: Sequence[float] | None = None) -> list:
    """The ladder; logistic regression is optional (liblinear is ~30x slower than LinearSVC here)."""
    out = [RandomBaseline(seed), PriorRandomBaseline(seed), RuleBaseline(),
           TfidfLinearBaseline("svm", c_grid, min_support=min_support, seed=seed)]
    if logreg:
        out.append(TfidfLinearBaseline("logreg", c_grid, min_support=min_support, seed=seed))
    return out


def throughput(predict, texts: Sequence[str], min_seconds: float = 0.2) -> float:
    """Documents per second of ``predict(texts)`` (repeated until ``min_seconds`` have passed)."""
    if not texts:
        return 0.0
    done, t0 = 0, time.perf_counter()
    while True:
        predict(texts)
        done += len(texts)
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            return done / elapsed


def run_baselines(split: SplitData, baselines: Sequence | None = None, seed: int = 42) -> dict:
    """Fit every baseline on train (choices on val) and evaluate on test: ``{name: metrics}``."""
    out = {}
    labels = split.labels.labels
    for b in baselines if baselines is not None else default_baselines(seed):
        t0 = time.perf_counter()
        b.fit(split)
        fit_s = time.perf_counter() - t0
        metrics = evaluate(split.y["test"], b.predict(split.texts["test"]), labels)
        val_f1 = getattr(b, "val_f1", None)
        if val_f1 is None:
            val_f1 = weighted_f1(split.y["val"], b.predict(split.texts["val"]))
        metrics.update({"split": "test", "val_f1": float(val_f1), "params": b.params, "fit_seconds": round(fit_s, 3),
                        "throughput_docs_per_s": throughput(b.predict, split.texts["test"])})
        out[b.name] = metrics
        logger.info("%s: test weighted F1 %.4f (val %.4f), %.0f docs/s", b.name, metrics["overall"]["f1"], val_f1,
                    metrics["throughput_docs_per_s"])
    return out


def markdown_table(results: dict, extra: dict | None = None) -> str:
    """One row per model: weighted P/R/F1, micro/macro F1, validation F1, docs/s."""
    rows = dict(results)
    rows.update(extra or {})
    lines = ["| model | precision | recall | F1 (weighted) | micro F1 | macro F1 | val F1 | docs/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in rows.items():
        o = m["overall"]
        val = m.get("val_f1")
        tput = m.get("throughput_docs_per_s")
        lines.append(f"| {name} | {o['precision']:.3f} | {o['recall']:.3f} | {o['f1']:.3f} | {o['micro_f1']:.3f} | "
                     f"{o['macro_f1']:.3f} | {'' if val is None else f'{val:.3f}'} | "
                     f"{'' if tput is None else f'{tput:,.0f}'} |")
    return "\n".join(lines) + "\n"


def write_baselines(results: dict, split: SplitData, out_dir: str | Path) -> Path:
    """``baselines.json`` (name -> metrics), ``baselines.md`` (table) and ``run.json`` (split, labels)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "baselines.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    header = (f"# Baselines (test split: {split.info['counts']['test']} rows, {len(split.labels)} tags; "
              f"split from {split.info['split_source']})\n\n")
    (out / "baselines.md").write_text(header + markdown_table(results), encoding="utf-8")
    (out / "run.json").write_text(json.dumps(split.info, indent=1) + "\n", encoding="utf-8")
    return out / "baselines.json"


def load_baselines(dir_or_file: str | Path) -> tuple[dict, dict]:
    """(results, run info) from a ``tagging baselines`` output directory (or its baselines.json)."""
    path = Path(dir_or_file)
    path = path / "baselines.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no baselines.json (run `tagging baselines` first)")
    results = json.loads(path.read_text("utf-8"))
    run = path.with_name("run.json")
    return results, (json.loads(run.read_text("utf-8")) if run.is_file() else {})
