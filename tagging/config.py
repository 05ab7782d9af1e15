"""Typed, frozen configuration with one loader.

Precedence: command line (flags and ``--set key=value``) > config file (JSON or YAML) > the
defaults below. Every value is coerced to its field's type or refused with an error that names
the field (``model.dropout: expected a number, got 'high'``), so a bad config fails before any
Ray work; ``validate`` then checks ranges. Every config is saved inside the artifact it
produced. Why the defaults are what they are (measurements): docs/config-notes.md.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """A configuration value is unknown or invalid; the message names the field."""


@dataclass(frozen=True)
class DataConfig:
    id_column: str = "id"
    """Column holding a unique row id (any type; carried as a string)."""
    text_column: str = "text"
    """Column holding the text. If absent, title_column + description_column are joined."""
    title_column: str = "title"
    """Fallback text part 1 (used when text_column is absent)."""
    description_column: str = "description"
    """Fallback text part 2 (used when text_column is absent)."""
    tags_column: str = "tags"
    """Column holding the tags: a list of strings, a JSON list string, or a delimited string."""
    tags_delimiter: str = ","
    """Delimiter of tags given as a plain string."""
    max_text_chars: int = 10_000
    """Rows with longer texts (characters, before normalization) are rejected as too long (> 0)."""
    csv_delimiter: str = "auto"
    """CSV field delimiter: auto (tab for .tsv, else the one of , ; tab | the header holds most), or the character itself ("tab" for a tab)."""
    lowercase: bool = True
    """Lowercase texts during normalization."""
    remove_stopwords: bool = False
    """Drop punctuation and English stopwords during normalization."""
    labels_file: str | None = None
    """File (path or URI) with one tag a line: the fixed label space. Overrides min_tag_freq."""
    tags_file: str | None = None
    """File (path or URI): a JSON array of {tag, aliases, parents} that maps aliases to tags."""
    expand_parents: bool = False
    """Also add every parent tag from tags_file to a row's tags."""
    min_tag_freq: int = 10
    """Without labels_file: keep tags that occur in at least this many rows (>= 1)."""
    val_fraction: float = 0.15
    """Fraction of rows in the validation split (0 < x < 0.5)."""
    test_fraction: float = 0.15
    """Fraction of rows in the test split (0 < x < 0.5)."""

    def __post_init__(self) -> None:
        _coerce_fields(self)


@dataclass(frozen=True)
class ModelConfig:
    embedding_dim: int = 64
    """Character embedding size (> 0)."""
    num_filters: int = 64
    """Conv1d filters per width (> 0)."""
    filter_widths: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
    """Convolution widths in characters (each > 0; SAME padding, so any width works); "1,2,3" or a list."""
    hidden_dim: int = 256
    """Units of the hidden fully connected layer (> 0)."""
    dropout: float = 0.1
    """Dropout probability before the output layer (0 <= x < 1)."""
    max_length: int = 512
    """Texts are truncated to this many characters (> 0; truncations are counted)."""
    batch_norm: bool = False
    """BatchNorm1d after each convolution (before ReLU)."""
    ensemble: int = 3
    """Members of a seed ensemble (1..16): K models trained with seeds seed..seed+K-1 on the same
    split, their probabilities averaged in one exported graph (K times the training and scoring
    cost). 1 = a single model."""

    def __post_init__(self) -> None:
        _coerce_fields(self)


@dataclass(frozen=True)
class DistillConfig:
    enabled: bool = True
    """With model.ensemble > 1, `tagging train` trains the ensemble (the teacher), then one student on
    its soft targets, and ships the student (the teacher is kept in ARTIFACT/teacher); false ships
    the ensemble."""
    temperature: float = 1.0
    """Softening of the teacher's and the student's logits in the soft loss (> 0; T^2 rescales it)."""
    alpha: float = 0.5
    """Weight of the hard-label loss on labeled rows (0..1); the teacher's soft targets get 1 - alpha,
    and all of the loss on rows without labels."""
    concat_pool: int = 8
    """Concatenations per training row scored by the teacher before training (>= 0); each epoch the
    student draws student_concat_rate x training rows of them (in place of concatenations made on the fly)."""
    unlabeled: bool = True
    """Also learn the teacher's scores on the input rows without a tag in the label space."""
    teacher_linear: float = 0.3
    """Weight (0..1) of a TF-IDF + LinearSVC (fit on train, calibrated on validation) in the teacher's
    probabilities; 0 = the char-CNN ensemble alone."""
    student_num_filters: int | None = None
    """The student's filters per width (None = the teacher's model.num_filters)."""
    student_filter_widths: tuple[int, ...] | None = None
    """The student's convolution widths (None = the teacher's model.filter_widths up to student_max_width)."""
    student_max_width: int | None = 8
    """Without student_filter_widths, the student keeps the teacher's widths up to this one (None =
    all of them): the default student is widths 1-8 of the default member's 1-10."""
    student_max_length: int | None = None
    """The student's max_length in characters (None = the teacher's model.max_length)."""
    student_concat_rate: float | None = None
    """Concatenations per training row and epoch the student draws from the pool (0..8; None = concat_rate)."""
    student_ema_decay: float | None = None
    """The student's weight average (ema_decay of the student alone; None = the teacher's ema_decay)."""
    student_init: Literal["auto", "random", "teacher"] = "auto"
    """The student's first weights: 'teacher', a pruned copy of the teacher's member 0 (its
    embedding rows of the student's characters, its convolutions of the student's widths, their
    student_num_filters of their filters, the matching FC inputs, the output layer), which needs the
    teacher's embedding_dim, hidden_dim and batch_norm and widths among the teacher's; 'random'
    (seeded, as any model); 'auto': 'teacher' where the student is such a cut, else 'random'.
    A student with fewer filters keeps each width's most useful ones on the training texts."""

    def __post_init__(self) -> None:
        _coerce_fields(self)


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    """Input columns, normalization, label space and split."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Architecture of the char-CNN (saved with the artifact)."""
    distill: DistillConfig = field(default_factory=DistillConfig)
    """Knowledge distillation of the ensemble into one student (tagging distill, tagging train)."""
    seed: int = 42
    """Seeds the split, weight init and batch order."""
    batch_size: int = 32
    """Global batch size in rows (> 0, >= workers): split evenly across workers."""
    learning_rate: float = 3e-3
    """Adam(W) learning rate (> 0)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay (>= 0; 0 = plain Adam behaviour)."""
    max_epochs: int = 40
    """Epochs at most (> 0; the cosine schedule decays to zero at the last one); early stopping may end sooner."""
    patience: int = 12
    """Early stopping: epochs without validation improvement before stopping."""
    ema_decay: float = 0.998
    """Weights averaged over training steps (exponential moving average with this decay per
    step, in [0, 1); 0 = off). Every epoch validation scores the average and the trained weights
    and keeps the better; early stopping and the exported model use what was kept. It remembers
    about 1 / (1 - decay) steps (0.998: ~500, ~10 epochs of the real data), and at most a quarter
    of the run's planned steps (tagging.training.average_decay)."""
    lr_schedule: Literal["cosine", "plateau"] = "cosine"
    """'cosine': linear warm-up over the first tenth of max_epochs, then cosine decay to zero at
    max_epochs, stepped per epoch; 'plateau': ReduceLROnPlateau on validation F1."""
    lr_patience: int = 3
    """ReduceLROnPlateau patience in epochs."""
    lr_factor: float = 0.5
    """ReduceLROnPlateau factor."""
    concat_rate: float = 1.0
    """Augmentation (0..8, 0 = off): extra rows per training row and epoch, each the row's text
    joined with a random other training text, labelled with both rows' tags (tagging.augment)."""
    alias_examples: bool | None = None
    """Augmentation from data.tags_file: each epoch, one short example per tag of the tags file,
    a random one of its names, labelled with the tag and its ancestors in the label space.
    None (the default) resolves to True when a tags file is given and False otherwise; True
    without a tags file is an error."""
    imbalance: Literal["pos_weight", "inverse_count", "none"] = "pos_weight"
    """Class imbalance handling: 'pos_weight' (neg/pos ratio, sqrt-damped), 'inverse_count' (1/count class weights), or 'none'."""
    workers: int = 2
    """Ray Train workers (data-parallel DDP, >= 0). 0 runs in-process (no checkpoints)."""
    cpus_per_worker: float = 0.5
    """CPUs reserved per worker (> 0); fractional leaves room for Ray Data on small machines."""
    use_gpu: bool = False
    """One GPU per worker, NCCL and mixed precision."""
    threads_per_worker: int = 1
    """torch intra-op threads per worker process."""
    bucket_batches: int = 16
    """Length bucketing: sort this many batches' worth of rows by length, then cut batches."""
    cache_shards: bool = True
    """Keep each worker's shard in memory after the first epoch instead of re-streaming it
    from Ray Data every epoch; turn off when a shard does not fit in a worker's memory."""
    threshold_min_support: int = 5
    """Classes with fewer validation positives use the global threshold."""
    max_failures: int = 2
    """Worker-group restarts from the last checkpoint before the run fails."""

    def __post_init__(self) -> None:
        _coerce_fields(self)
        if self.alias_examples is None:  # resolved here, so every saved config says which it was
            object.__setattr__(self, "alias_examples", bool(self.data.tags_file))
        validate(self)


def student_widths(cfg: TrainConfig) -> tuple[int, ...]:
    """A distillation student's convolution widths: distill.student_filter_widths, else the
    teacher's model.filter_widths up to distill.student_max_width."""
    d, widths = cfg.distill, cfg.model.filter_widths
    if d.student_filter_widths:
        return tuple(d.student_filter_widths)
    return tuple(w for w in widths if d.student_max_width is None or w <= d.student_max_width)


def validate(cfg: TrainConfig) -> None:
    """Range checks (the types are checked on construction); ConfigError names the field."""
    d, m = cfg.data, cfg.model
    checks = [
        ("data.max_text_chars", d.max_text_chars > 0, "must be > 0"),
        ("data.csv_delimiter", d.csv_delimiter in ("auto", "tab", "\\t") or len(d.csv_delimiter) == 1,
         "must be auto, tab or one character"),
        ("data.val_fraction", 0 < d.val_fraction < 0.5, "must be in (0, 0.5)"),
        ("data.test_fraction", 0 < d.test_fraction < 0.5, "must be in (0, 0.5)"),
        ("data.min_tag_freq", d.min_tag_freq >= 1, "must be >= 1"),
        ("model.embedding_dim", m.embedding_dim > 0, "must be > 0"),
        ("model.num_filters", m.num_filters > 0, "must be > 0"),
        ("model.filter_widths", len(m.filter_widths) > 0 and all(w > 0 for w in m.filter_widths), "must be widths > 0"),
        ("model.hidden_dim", m.hidden_dim > 0, "must be > 0"),
        ("model.dropout", 0 <= m.dropout < 1, "must be in [0, 1)"),
        ("model.max_length", m.max_length > 0, "must be > 0"),
        ("model.ensemble", 1 <= m.ensemble <= 16, "must be in 1..16"),
        ("ema_decay", 0 <= cfg.ema_decay < 1, "must be in [0, 1)"),
        ("batch_size", cfg.batch_size > 0, "must be > 0"),
        ("learning_rate", cfg.learning_rate > 0, "must be > 0"),
        ("weight_decay", cfg.weight_decay >= 0, "must be >= 0"),
        ("max_epochs", cfg.max_epochs > 0, "must be > 0"),
        ("concat_rate", 0 <= cfg.concat_rate <= 8, "must be in [0, 8]"),
        ("alias_examples", not cfg.alias_examples or bool(d.tags_file), "needs data.tags_file (--tags)"),
        ("distill.temperature", cfg.distill.temperature > 0, "must be > 0"),
        ("distill.alpha", 0 <= cfg.distill.alpha <= 1, "must be in [0, 1]"),
        ("distill.concat_pool", cfg.distill.concat_pool >= 0, "must be >= 0"),
        ("distill.teacher_linear", 0 <= cfg.distill.teacher_linear <= 1, "must be in [0, 1]"),
        ("distill.student_num_filters", (cfg.distill.student_num_filters or 1) > 0, "must be > 0"),
        ("distill.student_filter_widths", all(w > 0 for w in cfg.distill.student_filter_widths or (1,)), "must be widths > 0"),
        ("distill.student_max_width", bool(student_widths(cfg)),
         f"leaves none of model.filter_widths {list(m.filter_widths)}: raise it, or set distill.student_filter_widths"),
        ("distill.student_max_length", (cfg.distill.student_max_length or 1) > 0, "must be > 0"),
        ("distill.student_concat_rate", 0 <= (cfg.distill.student_concat_rate or 0) <= 8, "must be in [0, 8]"),
        ("distill.student_ema_decay", 0 <= (cfg.distill.student_ema_decay or 0) < 1, "must be in [0, 1)"),
        ("distill.student_init", cfg.distill.student_init != "teacher" or (
            set(student_widths(cfg)) <= set(m.filter_widths)
            and (cfg.distill.student_num_filters or m.num_filters) <= m.num_filters),
         "'teacher' needs the student's widths among model.filter_widths and at most model.num_filters filters"),
        ("workers", cfg.workers >= 0, "must be >= 0"),
        ("cpus_per_worker", cfg.cpus_per_worker > 0, "must be > 0"),
        ("batch_size", cfg.workers == 0 or cfg.batch_size >= cfg.workers, "must be >= workers"),
    ]
    for name, ok, rule in checks:
        if not ok:
            value = cfg
            for part in name.split("."):
                value = getattr(value, part)
            raise ConfigError(f"{name}: {rule}, got {value!r}")


# ------------------------------------------------------------------ types

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):  # YAML reads 1e-3 as a string
        for parse in (int, float):
            try:
                return parse(value.strip())
            except ValueError:
                pass
    return None


def coerce(name: str, hint: Any, value: Any) -> Any:
    """``value`` as the type ``hint`` of the field ``name`` (dotted), or ConfigError naming it.

    Numbers from strings ("1e-3"); ints only when integral (3.0 yes, 3.7 no); bools from
    true/false/yes/no/on/off/1/0; tuples from lists or "1,2,3"; None for optional fields from
    null, "" or "none"; a Literal's value must be one of its choices."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType) and type(None) in args:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return coerce(name, hint, value)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{name}: expected one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is tuple:
        items = value.strip(" []()").split(",") if isinstance(value, str) else value
        items = list(items) if isinstance(items, (list, tuple)) else [items]
        return tuple(coerce(name, args[0], v) for v in items if not (isinstance(v, str) and not v.strip()))
    if hint is bool:
        text = str(value).strip().lower() if isinstance(value, (str, int)) else None
        if isinstance(value, bool) or text in _TRUE + _FALSE:
            return value if isinstance(value, bool) else text in _TRUE
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if hint is int:
        number = _number(value)
        if number is None or (isinstance(number, float) and not number.is_integer()):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return int(number)
    if hint is float:
        number = _number(value)
        if number is None or not math.isfinite(number):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        return float(number)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{name}: no coercion for type {hint!r}")


_hints = functools.cache(get_type_hints)  # a config dataclass's fields -> their types, in order


def _coerce_fields(obj: Any) -> None:
    """Coerce every field of a config dataclass in place (so direct construction is checked too)."""
    for name, hint in _hints(type(obj)).items():
        value = getattr(obj, name)
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, hint):
                raise ConfigError(f"{name}: expected a mapping of {hint.__name__} fields, got {value!r}")
        else:
            object.__setattr__(obj, name, coerce(name, hint, value))


def field_type(key: str) -> Any:
    """The type of a dotted TrainConfig field ("model.dropout"); ConfigError for an unknown one."""
    hint, parts = TrainConfig, key.split(".")
    for i, part in enumerate(parts):
        hints = _hints(hint) if dataclasses.is_dataclass(hint) else {}
        if part not in hints:
            close = difflib.get_close_matches(part, list(hints), n=1)
            raise ConfigError(f"unknown config field {key!r}" + (f"; did you mean {'.'.join(parts[:i] + close)}?" if close else ""))
        hint = hints[part]
    return hint


def check_override(key: str, value: Any) -> Any:
    """``value`` coerced for the dotted field ``key`` (a ``--set key=value``); ConfigError names it."""
    hint = field_type(key)
    if dataclasses.is_dataclass(hint):
        raise ConfigError(f"{key} is a section: set its fields ({key}.<field>=...)")
    return coerce(key, hint, value)


# ------------------------------------------------------------------ documentation


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a config dataclass, read from this file's source."""
    import ast
    import inspect

    body = ast.parse(inspect.getsource(cls)).body[0].body
    return {node.target.id: inspect.cleandoc(after.value.value) for node, after in zip(body, body[1:])
            if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)}


def type_name(hint: Any) -> str:
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return " | ".join(map(str, args))
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is tuple:
        return f"list of {type_name(args[0])}"
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def describe(cfg: Any = None, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(dotted name, type, value, doc) of every leaf field of ``cfg`` (the defaults when None)."""
    cfg = TrainConfig() if cfg is None else cfg
    rows = []
    for name, hint in _hints(type(cfg)).items():
        value = getattr(cfg, name)
        if dataclasses.is_dataclass(hint):
            rows += describe(value, f"{prefix}{name}.")
        else:
            rows.append((prefix + name, type_name(hint), value, field_docs(type(cfg)).get(name, "")))
    return rows


# ------------------------------------------------------------------ loading


def absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with its local input files (labels_file, tags_file) made absolute.

    Processes that start elsewhere read these files too: Ray Tune runs each trial in its own
    trial directory, where a relative ``--tags ../data/tags.json`` names nothing. URIs stay as
    they are."""
    def fix(path: str | None) -> str | None:
        return path if path is None or "://" in path else str(Path(path).expanduser().absolute())

    data = dataclasses.replace(cfg.data, labels_file=fix(cfg.data.labels_file), tags_file=fix(cfg.data.tags_file))
    return dataclasses.replace(cfg, data=data)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def _build(cls: type, values: Any, prefix: str = "") -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping of fields, got {values!r}")
    kwargs = {}
    for key, value in values.items():
        if not isinstance(key, str) or "." in key:  # dotted keys are for overrides, not inside a mapping
            raise ConfigError(f"unknown config field {prefix}{key!r}")
        hint = field_type(f"{prefix}{key}")
        kwargs[key] = _build(hint, value, f"{prefix}{key}.") if dataclasses.is_dataclass(hint) else coerce(prefix + key, hint, value)
    return cls(**kwargs)


def merge(base: dict, overrides: dict) -> dict:
    """Nested merge: keys of ``overrides`` win; dotted keys ("model.dropout") address nested fields."""
    out = json.loads(json.dumps(base))
    for key, value in overrides.items():
        if value is None:
            continue
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = list(value) if isinstance(value, tuple) else value
    return out


def load_config(path: str | Path | None = None, overrides: dict | None = None, base: dict | None = None) -> TrainConfig:
    """Defaults (or ``base``, e.g. a teacher's config), then the file (JSON or YAML), then
    ``overrides`` (dotted keys, None = unset)."""
    values: dict = {}
    if path is not None:
        parse, errors = json.loads, ValueError
        if str(path).endswith((".yaml", ".yml")):
            import yaml

            parse, errors = yaml.safe_load, yaml.YAMLError
        try:
            values = parse(Path(path).read_text("utf-8")) or {}
        except errors as exc:
            raise ConfigError(f"config file {path}: {str(exc).splitlines()[0]}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"config file {path} must hold a mapping")
    return _build(TrainConfig, merge(_merge_nested(base or {}, values), overrides or {}))


def _merge_nested(base: dict, values: dict) -> dict:
    out = dict(base)
    for key, value in values.items():
        out[key] = _merge_nested(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def from_dict(values: dict) -> TrainConfig:
    return _build(TrainConfig, values)
