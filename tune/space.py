"""The search space: defaults in code, overridable by a JSON/YAML file (--space).

A space file maps config keys (dotted, as in `tagging train --config`) to a distribution:
``{"choice": [...]}``, ``{"uniform": [lo, hi]}``, ``{"loguniform": [lo, hi]}``,
``{"randint": [lo, hi]}`` (hi exclusive), ``{"grid": [...]}`` (every value, times --trials),
or a plain value (fixed).
"""

from __future__ import annotations

import json
from pathlib import Path

DEFAULT_SPACE: dict[str, dict] = {
    # Architecture: the scoring cost is mostly embedding_dim x num_filters x sum(filter_widths).
    "model.embedding_dim": {"choice": [32, 48, 64]},
    "model.num_filters": {"choice": [48, 64, 96]},
    "model.filter_widths": {"choice": [[1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]},
    "model.hidden_dim": {"choice": [128, 256, 512]},
    "model.dropout": {"uniform": [0.0, 0.3]},
    # Optimization and augmentation (why these ranges: docs/config-notes.md).
    "learning_rate": {"loguniform": [1.5e-3, 5e-3]},
    "batch_size": {"choice": [16, 32]},
    "weight_decay": {"choice": [0.0, 0.01, 0.05]},
    "imbalance": {"choice": ["pos_weight", "inverse_count"]},
    "lr_schedule": {"choice": ["cosine", "plateau"]},
    "concat_rate": {"choice": [1.0, 2.0]},
    # Only searched when a tags file is given (tagging tune --tags).
    "alias_examples": {"choice": [False, True]},
}
NEEDS_TAGS_FILE = ("alias_examples",)
DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint", "grid", "fixed")

THRESHOLD_SPACE = {"min_support": [0, 3, 5, 10], "shrink": [0.0, 0.25, 0.5, 0.75, 1.0]}


def load_space(path: str | Path | None) -> dict[str, dict]:
    """DEFAULT_SPACE updated with the file's entries (a key mapped to null removes it)."""
    space = dict(DEFAULT_SPACE)
    if path is None:
        return space
    text = Path(path).read_text("utf-8")
    if str(path).endswith((".yaml", ".yml")):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a search space file holds a mapping of config keys to distributions")
    for key, value in data.items():
        if value is None:
            space.pop(key, None)
        else:
            space[key] = value if isinstance(value, dict) else {"fixed": value}
    return space


def tune_value(value):
    """A list value (model.filter_widths) as the string "1,2,3", which the config reads back:
    Tune walks into lists and tuples of a preset point, and Optuna's choices must be scalars."""
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def to_tune(space: dict[str, dict]) -> dict:
    """Ray Tune sampling objects for a space (keys keep their dots)."""
    from ray import tune

    out = {}
    for key, dist in space.items():
        (kind, arg), = dist.items()
        if kind == "choice":
            out[key] = tune.choice([tune_value(a) for a in arg])
        elif kind == "uniform":
            out[key] = tune.uniform(*arg)
        elif kind == "loguniform":
            out[key] = tune.loguniform(*arg)
        elif kind == "randint":
            out[key] = tune.randint(*arg)
        elif kind == "grid":
            out[key] = tune.grid_search([tune_value(a) for a in arg])
        else:  # fixed (check_space refuses unknown kinds)
            out[key] = arg
    return out


def check_space(space: dict[str, dict], base: dict) -> None:
    """Refuse, before any trial runs, an entry that names no config field, is not one known
    distribution, or holds a value the config refuses (every choice, grid value and range bound
    is tried on ``base``, a config dict); the error names the entry."""
    from tagging.config import ConfigError, from_dict, merge

    for key, dist in space.items():
        if not (isinstance(dist, dict) and len(dist) == 1):
            raise ValueError(f"search space entry {key!r}: expected one distribution, got {dist!r}")
        (kind, arg), = dist.items()
        if kind not in DISTRIBUTIONS:
            raise ValueError(f"search space entry {key!r}: unknown distribution {kind!r} (one of {', '.join(DISTRIBUTIONS)})")
        values = [arg] if kind == "fixed" else arg
        if kind in ("choice", "grid") and not (isinstance(arg, list) and arg):
            raise ValueError(f"search space entry {key!r}: {kind} needs a non-empty list, got {arg!r}")
        if kind in ("uniform", "loguniform", "randint"):
            if not (isinstance(arg, list) and len(arg) == 2 and all(isinstance(v, (int, float)) for v in arg) and arg[0] < arg[1]):
                raise ValueError(f"search space entry {key!r}: {kind} needs [low, high] with low < high, got {arg!r}")
            if kind == "loguniform" and arg[0] <= 0:
                raise ValueError(f"search space entry {key!r}: loguniform needs low > 0, got {arg!r}")
            values = [arg[0], arg[1] - 1] if kind == "randint" else arg
        for value in values:
            try:
                from_dict(merge(base, {key: value}))
            except ConfigError as exc:
                raise ConfigError(f"search space entry {key!r}: {exc}") from None


def base_point(space: dict[str, dict], base: dict) -> dict | None:
    """The base config's values for the searched keys (evaluated as the first trial, so the
    leaderboard compares every trial with the defaults under the same conditions), or None when
    a value lies outside its distribution or the space has a grid."""
    point = {}
    for key, dist in space.items():
        (kind, arg), = dist.items()
        value = base
        for part in key.split("."):
            value = value[part]
        value = tune_value(value)
        if kind == "grid":
            return None
        if kind == "choice" and value not in [tune_value(a) for a in arg]:
            return None
        if kind in ("uniform", "loguniform") and not arg[0] <= value <= arg[1]:
            return None
        if kind == "randint" and not arg[0] <= value < arg[1]:
            return None
        if kind == "fixed":
            continue
        point[key] = value
    return point
