"""Synthetic multi-label corpus of short "ML project" texts.

The project ships this generator as its built-in default dataset: the demo, the
CLI and every test can produce a realistic corpus on the fly, deterministically,
without any download.

Each document imitates a project listing (title + description joined by a
space, like the real data set the tagger was designed for): a title built from a
template and a keyword of the document's main tag, then a short description made
of shared filler words with keywords of each of its tags inserted at random
positions. Keywords are words and typical character n-grams ("resnet",
"tokeniz", "yolo", "torch.nn" ...); several are deliberately shared between
tags ("lstm", "embeddings", "attention") so that the task is not a lookup.

Noise keeps the signal learnable but not trivial:

* random case changes (whole text lower-cased, title-cased, single keywords
  upper-cased or capitalised);
* typos (swapped adjacent characters);
* documents missing every keyword of one of their (non-main) tags;
* confuser keywords of a tag the document does not have;
* about 5 % label noise (a tag added or dropped after the text was written).

Lengths follow the real data: mean about 136 characters, clipped to
[``MIN_CHARS``, ``MAX_CHARS``] = [20, 450].

``bad_fraction > 0`` replaces that fraction of rows by invalid rows of every
kind in ``BAD_KINDS`` (cycled, so each kind appears once ``rows * bad_fraction
>= len(BAD_KINDS)``) and adds a ``_bad_kind`` column naming the corruption of
each row (``None`` for good rows), so that validation / scoring tests can check
their accounting row by row. The good rows of such a frame are identical to the
rows of ``generate_corpus(rows, seed)`` at the same positions.

Only numpy, pandas, pyarrow and the standard library are used; importing this
module has no side effects.
"""

from __future__ import annotations

import io
import json
import os
import random
from typing import Any

import numpy as np
import pandas as pd

# --------------------------------------------------------------------------
# Vocabularies
# --------------------------------------------------------------------------

#: Keyword vocabulary per tag. Natural casing; some entries are shared
#: between tags on purpose (ambiguity), some are character n-grams / stems that
#: the char-CNN is expected to pick up inside longer words.
_TAG_KEYWORDS: dict[str, tuple[str, ...]] = {
    "computer-vision": (
        "image", "images", "CNN", "convnet", "ResNet", "VGG", "OpenCV", "pixels",
        "segmentation", "image classification", "vision", "ImageNet",
        "convolutional", "U-Net", "EfficientNet", "augmentation",
        "face recognition", "MNIST", "CIFAR-10", "visual", "conv2d", "attention",
    ),
    "object-detection": (
        "YOLO", "YOLOv5", "bounding box", "bounding boxes", "detector",
        "Faster R-CNN", "Mask R-CNN", "SSD", "anchor boxes", "COCO", "detection",
        "non-max suppression", "RetinaNet", "Detectron2", "object tracking",
    ),
    "natural-language-processing": (
        "text", "NLP", "tokenizer", "tokenization", "tokenize", "sentiment",
        "word2vec", "embeddings", "language model", "corpus",
        "named entity recognition", "NER", "spaCy", "NLTK",
        "text classification", "question answering", "summarization",
        "machine translation", "GloVe", "LSTM", "chatbot", "sentences",
    ),
    "transformers": (
        "transformer", "transformers", "BERT", "GPT-2", "attention",
        "self-attention", "Hugging Face", "RoBERTa", "fine-tuning", "T5",
        "encoder-decoder", "ViT", "multi-head attention", "DistilBERT", "LLM",
    ),
    "reinforcement-learning": (
        "agent", "agents", "reward", "policy", "Q-learning", "DQN", "PPO",
        "OpenAI Gym", "environment", "actor-critic", "Markov decision process",
        "Atari", "multi-armed bandit", "policy gradient", "self-play", "RL",
    ),
    "graph-neural-networks": (
        "graph", "graphs", "GNN", "GCN", "node classification",
        "message passing", "graph attention", "PyTorch Geometric", "DGL",
        "node embeddings", "link prediction", "knowledge graph", "GraphSAGE",
        "adjacency matrix", "embeddings",
    ),
    "time-series": (
        "time series", "forecasting", "forecast", "ARIMA", "temporal", "LSTM",
        "stock prices", "sensor data", "anomaly detection", "seasonality",
        "Prophet", "sequences", "demand prediction", "timestamps",
    ),
    "generative-adversarial-networks": (
        "GAN", "GANs", "generator", "discriminator", "adversarial", "DCGAN",
        "StyleGAN", "CycleGAN", "image synthesis", "pix2pix", "latent space",
        "Wasserstein", "generative", "image-to-image",
    ),
    "recommendation-systems": (
        "recommender", "recommendations", "collaborative filtering",
        "matrix factorization", "user-item", "ratings", "MovieLens",
        "implicit feedback", "ranking", "embeddings", "cold start",
        "click-through rate", "personalization",
    ),
    "speech": (
        "speech", "audio", "ASR", "speech recognition", "wav2vec",
        "spectrogram", "MFCC", "text-to-speech", "TTS", "speaker", "waveform",
        "LibriSpeech", "voice", "Whisper", "LSTM",
    ),
    "pytorch": (
        "PyTorch", "torch", "torch.nn", "nn.Module", "torchvision",
        "PyTorch Lightning", "DataLoader", "autograd", "torchscript",
        "torch.optim",
    ),
    "tensorflow": (
        "TensorFlow", "Keras", "tf.keras", "tf.data", "TensorBoard", "TFLite",
        "TensorFlow.js", "Estimator API", "Sequential model", "TFX",
    ),
    "mlops": (
        "deployment", "Docker", "Kubernetes", "MLflow", "monitoring",
        "pipelines", "model serving", "REST API", "FastAPI", "CI/CD",
        "feature store", "model registry", "production", "experiment tracking",
    ),
}

#: All tag names, sorted.
TAGS: tuple[str, ...] = tuple(sorted(_TAG_KEYWORDS))

#: Probability that a document's main (title) tag is each domain tag.
_PRIMARY_WEIGHTS: dict[str, float] = {
    "computer-vision": 0.25,
    "natural-language-processing": 0.23,
    "reinforcement-learning": 0.07,
    "graph-neural-networks": 0.06,
    "time-series": 0.08,
    "generative-adversarial-networks": 0.05,
    "recommendation-systems": 0.06,
    "speech": 0.06,
    "mlops": 0.06,
    "transformers": 0.05,
    "object-detection": 0.03,
}

#: Shared filler words (function words repeated to be more frequent).
_FILLER: tuple[str, ...] = (
    "the", "the", "the", "a", "a", "a", "of", "of", "and", "and", "and", "with",
    "for", "for", "in", "in", "to", "to", "on", "using", "using", "we", "this",
    "our", "is", "are", "how", "from", "model", "models", "training", "dataset",
    "datasets", "implementation", "repository", "code", "paper", "results",
    "state-of-the-art", "performance", "accuracy", "simple", "fast", "efficient",
    "library", "framework", "deep", "learning", "neural", "network", "networks",
    "learn", "scratch", "open-source", "Python", "notebook", "tutorial",
    "approach", "method", "based", "new", "large", "small", "data",
    "evaluation", "benchmark", "experiments", "easy", "end-to-end", "pretrained",
    "architecture", "loss", "optimization", "gradient", "inference", "examples",
    "blog", "post", "article", "explained", "overview", "project", "GitHub",
    "better", "scalable", "robust", "real-time", "lightweight", "modular",
    "baseline", "metrics", "hyperparameters", "GPU", "layers", "classification",
    "prediction", "features", "analysis", "toolkit", "guide", "minimal",
)

_OPENERS: tuple[str, ...] = (
    "This repository contains", "In this post we show", "Official implementation of",
    "A collection of", "Code for", "We present", "Learn how to build",
    "A simple and", "Tutorial on", "Notebook showing", "An introduction to",
    "Experiments with", "A curated list of", "Reproducing", "",
)

_TITLE_TEMPLATES: tuple[str, ...] = (
    "{K} with {K2}", "{K} for {N}", "Simple {K}", "{K} in {K2}", "Awesome {K}",
    "{K} tutorial", "Implementing {K} from scratch", "{K}: {N}",
    "Understanding {K}", "{K} and {K2}", "A guide to {K}", "{K} benchmark",
    "Fast {K}", "{K} made easy", "Towards better {K}", "{K}",
)

_TITLE_NOUNS: tuple[str, ...] = (
    "beginners", "production", "research", "everyone", "practitioners",
    "the real world", "small datasets", "edge devices", "fun and profit",
)

# Generation knobs (tuned so that a char n-gram TF-IDF + logistic regression
# baseline lands around 0.8 weighted F1, see tests/unit/test_synth.py).
_P_SECONDARY = 0.15      # a second domain tag
_P_FRAMEWORK = {"pytorch": 0.30, "tensorflow": 0.15}  # independent of topic
_P_ADDON_MLOPS = 0.05
_P_MISSING_KEYWORD = 0.20  # one non-main tag gets no keyword at all
_P_CONFUSER = 0.20         # a keyword of a tag the doc does not have
_P_LABEL_NOISE = 0.05
_P_TYPO = 0.25
_P_KEYWORD_CASE = 0.12
_MAX_TAGS = 4

#: Length limits of good rows (characters).
MIN_CHARS = 20
MAX_CHARS = 450
# Target-length distribution (log-normal, then clipped); the measured mean
# text length is about 136 characters.
_LEN_MU = 4.76
_LEN_SIGMA = 0.50

# --------------------------------------------------------------------------
# Bad rows
# --------------------------------------------------------------------------

#: Kinds of invalid rows produced by ``bad_fraction`` (value of ``_bad_kind``):
#:
#: * ``text_null``        -- text is ``None``
#: * ``text_empty``       -- text is ``""``
#: * ``text_whitespace``  -- text is whitespace only (spaces, tab, newline)
#: * ``text_not_string``  -- text is an ``int``
#: * ``text_too_long``    -- text longer than ``BAD_TEXT_LONG_CHARS`` (> 20,000)
#: * ``id_null``          -- id is ``None``
#: * ``id_duplicate``     -- id copied from an earlier good row
#: * ``tags_malformed``   -- tags is the unparseable string ``"[unclosed"``
#: * ``tags_not_list``    -- tags is an ``int``
BAD_KINDS: tuple[str, ...] = (
    "text_null",
    "text_empty",
    "text_whitespace",
    "text_not_string",
    "text_too_long",
    "id_null",
    "id_duplicate",
    "tags_malformed",
    "tags_not_list",
)

#: Length of the ``text_too_long`` texts.
BAD_TEXT_LONG_CHARS = 25_000
_BAD_WHITESPACE = "  \t \n  "
_BAD_TEXT_INT = 12345
_BAD_TAGS_STRING = "[unclosed"
_BAD_TAGS_INT = 7

#: Raw, line-level corruptions appended at the end of a ``.jsonl`` file written
#: from a frame that has a ``_bad_kind`` column: one malformed JSON line and one
#: line that is not valid UTF-8. Each entry is exactly one line.
JSONL_RAW_CORRUPTIONS: tuple[bytes, ...] = (
    b'{"id": "broken-1", "text": "unterminated\n',
    b'{"id": "badutf8-1", "text": "caf\xe9 \xff", "tags": ["speech"]}\n',
)
#: Number of extra raw lines appended to such a ``.jsonl`` file (so a file of
#: ``n`` rows has ``n + JSONL_EXTRA_RAW_LINES`` lines).
JSONL_EXTRA_RAW_LINES: int = len(JSONL_RAW_CORRUPTIONS)


# --------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------


def _sample_labels(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(true, noisy, primary)``.

    ``true`` (n, T) bool is the tag set the text is written from, ``noisy`` is
    ``true`` after label noise (what is emitted), ``primary`` (n,) is the index
    of the main tag used in the title. All vectorised except the ~5 % noisy rows.
    """
    t_index = {t: i for i, t in enumerate(TAGS)}
    n_tags = len(TAGS)
    names = list(_PRIMARY_WEIGHTS)
    w = np.array([_PRIMARY_WEIGHTS[k] for k in names])
    w = w / w.sum()
    prim_names_idx = rng.choice(len(names), size=n, p=w)
    name_to_tag = np.array([t_index[k] for k in names])
    primary = name_to_tag[prim_names_idx]

    m = np.zeros((n, n_tags), dtype=bool)
    rows = np.arange(n)
    m[rows, primary] = True

    def has(tag: str) -> np.ndarray:
        return m[:, t_index[tag]]

    def add(tag: str, mask: np.ndarray) -> None:
        m[mask, t_index[tag]] = True

    # Implications / typical co-occurrences.
    u = rng.random((n, 8))
    add("computer-vision", has("object-detection"))
    add("computer-vision", has("generative-adversarial-networks") & (u[:, 0] < 0.6))
    add("natural-language-processing", has("transformers") & (u[:, 1] < 0.6))
    add("object-detection", has("computer-vision") & (u[:, 2] < 0.25))
    add("generative-adversarial-networks", has("computer-vision") & (u[:, 3] < 0.08))
    add("transformers", has("natural-language-processing") & (u[:, 4] < 0.40))
    add("transformers", has("speech") & (u[:, 4] < 0.15))
    # Secondary domain.
    sec = name_to_tag[rng.choice(len(names), size=n, p=w)]
    sec_mask = u[:, 5] < _P_SECONDARY
    m[rows[sec_mask], sec[sec_mask]] = True
    # Frameworks and add-ons, independent of the topic.
    add("pytorch", u[:, 6] < _P_FRAMEWORK["pytorch"])
    add("tensorflow", u[:, 7] < _P_FRAMEWORK["tensorflow"])
    add("mlops", rng.random(n) < _P_ADDON_MLOPS)

    # Cap the number of tags, dropping the least topical first.
    for tag in ("tensorflow", "mlops", "pytorch", "generative-adversarial-networks",
                "transformers", "object-detection"):
        over = m.sum(axis=1) > _MAX_TAGS
        if not over.any():
            break
        j = t_index[tag]
        m[over & (primary != j), j] = False
    over = m.sum(axis=1) > _MAX_TAGS
    for i in np.flatnonzero(over):  # extremely rare: keep primary + first others
        keep = [primary[i]] + [j for j in np.flatnonzero(m[i]) if j != primary[i]][: _MAX_TAGS - 1]
        m[i] = False
        m[i, keep] = True

    # Label noise: add a random absent tag or drop a non-primary tag.
    noisy = m.copy()
    noise_rows = np.flatnonzero(rng.random(n) < _P_LABEL_NOISE)
    coins = rng.random(noise_rows.size)
    picks = rng.random(noise_rows.size)
    for i, c, p in zip(noise_rows, coins, picks):
        present = np.flatnonzero(noisy[i])
        droppable = [j for j in present if j != primary[i]]
        if droppable and (c < 0.5 or present.size >= _MAX_TAGS):
            noisy[i, droppable[int(p * len(droppable))]] = False
        else:
            absent = np.flatnonzero(~noisy[i])
            noisy[i, absent[int(p * absent.size)]] = True
    return m, noisy, primary


def _tag_lists(mask: np.ndarray) -> list[list[str]]:
    """Convert a (n, T) bool matrix to per-row sorted tag-name lists."""
    codes = mask.astype(np.int64) @ (1 << np.arange(mask.shape[1], dtype=np.int64))
    cache: dict[int, tuple[str, ...]] = {}
    out: list[list[str]] = []
    for c in codes.tolist():
        names = cache.get(c)
        if names is None:
            names = tuple(TAGS[j] for j in range(len(TAGS)) if (c >> j) & 1)
            cache[c] = names
        out.append(list(names))
    return out


def _swap_typo(s: str, u: float) -> str:
    """Swap two adjacent characters at relative position ``u``."""
    if len(s) < 3:
        return s
    i = int(u * (len(s) - 1))
    return s[:i] + s[i + 1] + s[i] + s[i + 2:]


def _clip_text(s: str) -> str:
    """Cut to at most ``MAX_CHARS`` at a word boundary."""
    if len(s) <= MAX_CHARS:
        return s
    cut = s.rfind(" ", 0, MAX_CHARS)
    if cut < MAX_CHARS // 2:
        cut = MAX_CHARS
    return s[:cut].rstrip()


def _make_texts(seed_int: int, true: np.ndarray, primary: np.ndarray,
                targets: np.ndarray) -> list[str]:
    """Write one text per row from its true tag set (per-row string joins)."""
    r = random.Random(seed_int).random  # stable across Python versions
    kw = [_TAG_KEYWORDS[t] for t in TAGS]
    n_tags = len(TAGS)
    filler, nf = _FILLER, len(_FILLER)
    openers, n_open = _OPENERS, len(_OPENERS)
    templates, n_tmpl = _TITLE_TEMPLATES, len(_TITLE_TEMPLATES)
    nouns, n_nouns = _TITLE_NOUNS, len(_TITLE_NOUNS)
    avg_fill = sum(len(w) + 1 for w in filler) / nf

    def pick(vocab: tuple[str, ...]) -> str:
        w = vocab[int(r() * len(vocab))]
        if r() < _P_KEYWORD_CASE:
            w = w.upper() if r() < 0.5 else w.lower()
        return w

    codes = true.astype(np.int64) @ (1 << np.arange(n_tags, dtype=np.int64))
    cache: dict[int, list[int]] = {}
    texts: list[str] = []
    for code, p, target in zip(codes.tolist(), primary.tolist(), targets.tolist()):
        present = cache.get(code)
        if present is None:
            present = cache[code] = [j for j in range(n_tags) if (code >> j) & 1]
        others = [j for j in present if j != p]
        # Keyword mentions per tag (title carries one of the primary's).
        counts = {j: (1 if r() < 0.55 else 2 if r() < 0.8 else 3) for j in others}
        counts[p] = 0 if r() < 0.5 else 1
        if others and r() < _P_MISSING_KEYWORD:
            counts[others[int(r() * len(others))]] = 0
        kws = [pick(kw[j]) for j in present for _ in range(counts[j])]
        if r() < _P_CONFUSER:
            j = int(r() * n_tags)
            if j not in present:
                kws.append(pick(kw[j]))

        tmpl = templates[int(r() * n_tmpl)]
        k2_src = others[int(r() * len(others))] if others and r() < 0.5 else p
        title = tmpl.format(K=pick(kw[p]), K2=pick(kw[k2_src]) if "{K2}" in tmpl else "",
                            N=nouns[int(r() * n_nouns)])
        if r() < 0.5:
            title = title[0].upper() + title[1:]
        opener = openers[int(r() * n_open)]

        cur = len(title) + len(opener) + 2 + sum(len(k) + 1 for k in kws)
        n_fill = max(1, int((target - cur) / avg_fill + 0.5))
        words = [filler[int(r() * nf)] for _ in range(n_fill)]
        for k in kws:
            words.insert(int(r() * (len(words) + 1)), k)
        desc = " ".join(words)
        if opener:
            desc = opener + " " + desc
        text = f"{title} {desc}."

        u = r()
        if u < 0.08:
            text = text.lower()
        elif u < 0.10:
            text = text.upper()
        elif u < 0.16:
            text = text.title()
        if r() < _P_TYPO:
            text = _swap_typo(text, r())
            if r() < 0.3:
                text = _swap_typo(text, r())
        text = _clip_text(text)
        while len(text) < MIN_CHARS:
            text = f"{text} {filler[int(r() * nf)]}"
        texts.append(text)
    return texts


def _long_text(base: str) -> str:
    """A text longer than 20,000 characters made by repeating a good text."""
    base = base.strip() or "filler text"
    reps = BAD_TEXT_LONG_CHARS // (len(base) + 1) + 1
    return " ".join([base] * reps)[:BAD_TEXT_LONG_CHARS]


def _inject_bad_rows(df: pd.DataFrame, seed: int, bad_fraction: float) -> pd.DataFrame:
    """Replace ``bad_fraction`` of the rows by bad rows, cycling ``BAD_KINDS``.

    Uses its own random stream so the remaining good rows are unchanged. Row 0
    is never replaced, so every ``id_duplicate`` row has an earlier good row to
    copy from.
    """
    rows = len(df)
    n_bad = int(round(rows * bad_fraction))
    n_bad = min(max(n_bad, 1), rows - 1)
    bad_kind: list[str | None] = [None] * rows
    if n_bad <= 0:
        df["_bad_kind"] = pd.Series(bad_kind, dtype=object)
        return df
    rng = np.random.default_rng([seed, 0xBAD])
    positions = np.sort(rng.choice(rows - 1, size=n_bad, replace=False) + 1).tolist()
    ids = df["id"].tolist()
    texts = df["text"].tolist()
    tags = df["tags"].tolist()
    bad_set = set(positions)
    for k, pos in enumerate(positions):
        kind = BAD_KINDS[k % len(BAD_KINDS)]
        bad_kind[pos] = kind
        if kind == "text_null":
            texts[pos] = None
        elif kind == "text_empty":
            texts[pos] = ""
        elif kind == "text_whitespace":
            texts[pos] = _BAD_WHITESPACE
        elif kind == "text_not_string":
            texts[pos] = _BAD_TEXT_INT
        elif kind == "text_too_long":
            texts[pos] = _long_text(texts[pos])
        elif kind == "id_null":
            ids[pos] = None
        elif kind == "id_duplicate":
            while True:  # terminates: row 0 is always good
                src = int(rng.integers(0, pos))
                if src not in bad_set:
                    break
            ids[pos] = ids[src]
        elif kind == "tags_malformed":
            tags[pos] = _BAD_TAGS_STRING
        elif kind == "tags_not_list":
            tags[pos] = _BAD_TAGS_INT
        else:  # pragma: no cover - BAD_KINDS and this chain must agree
            raise AssertionError(kind)
    return pd.DataFrame({
        "id": pd.Series(ids, dtype=object),
        "text": pd.Series(texts, dtype=object),
        "tags": pd.Series(tags, dtype=object),
        "_bad_kind": pd.Series(bad_kind, dtype=object),
    })


def generate_corpus(rows: int, seed: int = 0, bad_fraction: float = 0.0) -> pd.DataFrame:
    """Generate a synthetic multi-label corpus of ``rows`` documents.

    Returns a frame with object columns ``id`` (str, unique, ``"doc-000001"``
    ...), ``text`` (str) and ``tags`` (list of str from ``TAGS``, 1-4 per
    document, sorted). The result depends only on the arguments (same
    arguments, identical frame). Values are plain Python objects (object dtype)
    so that ``None`` and the odd types of bad rows survive unchanged.

    ``bad_fraction`` in [0, 1): when > 0, ``round(rows * bad_fraction)`` rows
    (at least one, never row 0) are replaced by invalid rows, cycling through
    ``BAD_KINDS``, and an extra column ``_bad_kind`` holds the kind of each
    row (``None`` for good rows). Without bad rows there is no such column.
    """
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    if not 0.0 <= bad_fraction < 1.0:
        raise ValueError(f"bad_fraction must be in [0, 1), got {bad_fraction}")
    rng = np.random.default_rng(seed)
    true, noisy, primary = _sample_labels(rng, rows)
    targets = np.clip(np.exp(rng.normal(_LEN_MU, _LEN_SIGMA, size=rows)),
                      MIN_CHARS, MAX_CHARS)
    seed_int = int(rng.integers(0, 2**63 - 1))
    texts = _make_texts(seed_int, true, primary, targets)
    width = max(6, len(str(rows)))
    ids = [f"doc-{i:0{width}d}" for i in range(1, rows + 1)]
    df = pd.DataFrame({
        "id": pd.Series(ids, dtype=object),
        "text": pd.Series(texts, dtype=object),
        "tags": pd.Series(_tag_lists(noisy), dtype=object),
    })
    if bad_fraction > 0 and rows > 1:
        df = _inject_bad_rows(df, seed, bad_fraction)
    elif bad_fraction > 0:
        df["_bad_kind"] = pd.Series([None] * rows, dtype=object)
    return df


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------

_EXT_FORMATS = {
    ".parquet": "parquet", ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl", ".ndjson": "jsonl",
    ".json": "json",
}


def _json_default(o: Any) -> Any:
    """JSON fallback for numpy scalars / arrays."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts of plain Python values (NaN -> None)."""
    cols = list(df.columns)
    out = []
    for row in zip(*(df[c].tolist() for c in cols)):
        rec = {}
        for c, v in zip(cols, row):
            if isinstance(v, float) and v != v:
                v = None
            elif isinstance(v, (tuple, np.ndarray)):
                v = list(v)
            rec[c] = v
        out.append(rec)
    return out


def _is_str_list(v: Any) -> bool:
    return isinstance(v, (list, tuple, np.ndarray)) and all(isinstance(x, str) for x in v)


def _tags_as_string(v: Any) -> str | None:
    """Tags value as a string: JSON list for lists, raw string, JSON otherwise."""
    if v is None or (isinstance(v, float) and v != v):
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple, np.ndarray)):
        return json.dumps(list(v), default=_json_default)
    return json.dumps(v, default=_json_default)


def _parquet_table(df: pd.DataFrame):
    """Arrow table for Parquet, stringifying mixed-type columns.

    ``text`` values that are neither str nor null are stored as ``str(v)``
    (so a ``text_not_string`` row reads back as a numeric string). ``tags``
    stays ``list<string>`` when every value is a list of str (or null);
    otherwise the whole column is stored as strings: JSON lists for lists, the
    raw string for strings, JSON for anything else.
    """
    import pyarrow as pa

    out = df.copy()
    if "text" in out:
        out["text"] = pd.Series(
            [v if v is None or isinstance(v, str) or (isinstance(v, float) and v != v)
             else str(v) for v in out["text"].tolist()], dtype=object, index=out.index)
    fields = []
    for c in out.columns:
        if c in ("id", "text", "_bad_kind"):
            fields.append(pa.field(c, pa.string()))
    if "tags" in out:
        vals = out["tags"].tolist()
        if all(v is None or _is_str_list(v) for v in vals):
            out["tags"] = pd.Series([None if v is None else list(v) for v in vals],
                                    dtype=object, index=out.index)
            fields.append(pa.field("tags", pa.list_(pa.string())))
        else:
            out["tags"] = pd.Series([_tags_as_string(v) for v in vals],
                                    dtype=object, index=out.index)
            fields.append(pa.field("tags", pa.string()))
    known = {f.name: f for f in fields}
    arrays, names = [], []
    for c in out.columns:
        values = out[c].tolist()
        if c in known:
            arrays.append(pa.array(values, type=known[c].type))
        else:
            arrays.append(pa.array(values))
        names.append(c)
    return pa.Table.from_arrays(arrays, names=names)


def _csv_bytes(df: pd.DataFrame) -> bytes:
    """CSV with list tags written as JSON list strings."""
    out = df.copy()
    if "tags" in out:
        out["tags"] = pd.Series(
            [json.dumps(list(v), default=_json_default) if isinstance(v, (list, tuple, np.ndarray))
             else v for v in out["tags"].tolist()], dtype=object, index=out.index)
    return out.to_csv(index=False).encode("utf-8")


def _jsonl_bytes(df: pd.DataFrame, raw_corruptions: bool) -> bytes:
    buf = io.BytesIO()
    for rec in _records(df):
        buf.write(json.dumps(rec, ensure_ascii=False, default=_json_default).encode("utf-8"))
        buf.write(b"\n")
    if raw_corruptions:
        for line in JSONL_RAW_CORRUPTIONS:
            buf.write(line)
    return buf.getvalue()


def _json_bytes(df: pd.DataFrame) -> bytes:
    return json.dumps(_records(df), ensure_ascii=False, default=_json_default).encode("utf-8")


def _resolve_fs(path: str):
    """Return ``(filesystem, path_in_fs)``; local parent dirs are created."""
    import pyarrow.fs as pafs

    if "://" in path:
        fs, inner = pafs.FileSystem.from_uri(path)
        parent = inner.rsplit("/", 1)[0] if "/" in inner else ""
        if parent:
            try:
                fs.create_dir(parent, recursive=True)
            except Exception:  # object stores may not need / allow it
                pass
        return fs, inner
    local = os.path.abspath(os.path.expanduser(path))
    os.makedirs(os.path.dirname(local), exist_ok=True)
    return pafs.LocalFileSystem(), local


def write_corpus(df: pd.DataFrame, path: str, fmt: str | None = None, *,
                 raw_corruptions: bool | None = None) -> None:
    """Write a corpus frame to ``path`` (local path or pyarrow filesystem URI).

    The format is ``fmt`` (``"parquet"``, ``"csv"``, ``"jsonl"``, ``"json"``)
    or inferred from the extension (``.parquet``/``.pq``, ``.csv``,
    ``.jsonl``/``.ndjson``, ``.json`` = one JSON array of records). Paths with
    ``"://"`` go through ``pyarrow.fs.FileSystem.from_uri``; for local paths the
    parent directories are created. All columns are written as they are
    (including ``_bad_kind`` when present), except:

    * CSV: list tags become JSON list strings (``'["a", "b"]'``);
    * Parquet: mixed-type ``text`` / ``tags`` columns are stringified (see
      ``_parquet_table``), because Arrow columns have a single type;
    * JSONL: when ``raw_corruptions`` is true -- by default when ``df`` has a
      ``_bad_kind`` column -- the ``JSONL_EXTRA_RAW_LINES`` lines of
      ``JSONL_RAW_CORRUPTIONS`` (malformed JSON, invalid UTF-8) are appended.
    """
    if fmt is None:
        ext = os.path.splitext(path.split("?", 1)[0])[1].lower()
        fmt = _EXT_FORMATS.get(ext)
        if fmt is None:
            raise ValueError(f"cannot infer format from {path!r}; pass fmt=")
    fmt = fmt.lower().lstrip(".")
    fmt = _EXT_FORMATS.get("." + fmt, fmt)
    if fmt not in ("parquet", "csv", "jsonl", "json"):
        raise ValueError(f"unknown format {fmt!r}")
    if raw_corruptions is None:
        raw_corruptions = "_bad_kind" in df.columns
    fs, inner = _resolve_fs(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(_parquet_table(df), inner, filesystem=fs)
        return
    if fmt == "csv":
        data = _csv_bytes(df)
    elif fmt == "jsonl":
        data = _jsonl_bytes(df, raw_corruptions)
    else:
        data = _json_bytes(df)
    with fs.open_output_stream(inner) as f:
        f.write(data)
