"""Knowledge distillation, Ray-free: one char-CNN (the student) learns an ensemble's (the teacher's) scores.

The teacher's probabilities carry what one model on ~1,000 labeled rows cannot see: how sure an
ensemble is, which tags co-occur, what a text without any label-space tag looks like. The
student trains on three kinds of rows, all scored by the teacher before training
(tagging.dist.distill, Ray Data + ONNX Runtime):

* the training split (hard labels and soft targets),
* a pool of concatenations of training rows (hard labels: the union; soft: the teacher's score of
  the joined text, not a max of the parts), of which each epoch draws ``concat_rate`` x rows,
* optionally rows without a tag in the label space (soft targets only).

Targets travel as one float32 matrix per row set, ``[hard (L) | soft (L) | has_hard | in_pool]``
(``pack``), so the readers, shards and batches of ordinary training carry them unchanged.
Validation, test and the split stay the teacher's: nothing of them reaches the student.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from tagging.augment import concat_pairs
from tagging.config import ConfigError, ModelConfig, TrainConfig, student_widths
from tagging.model import CharCNN
from tagging.vocab import CharVocab

EPS = 1e-6


def student_config(cfg: TrainConfig) -> TrainConfig:
    """The student's config: one model (no ensemble) with the ``distill.student_*`` overrides."""
    d = cfg.distill
    model = dataclasses.replace(
        cfg.model, ensemble=1,
        num_filters=d.student_num_filters or cfg.model.num_filters,
        filter_widths=student_widths(cfg),
        max_length=d.student_max_length or cfg.model.max_length)
    rate = cfg.concat_rate if d.student_concat_rate is None else d.student_concat_rate
    ema = cfg.ema_decay if d.student_ema_decay is None else d.student_ema_decay
    return dataclasses.replace(cfg, model=model, concat_rate=rate, ema_decay=ema)


def cut_problems(teacher: ModelConfig, student: ModelConfig) -> list[str]:
    """What keeps ``student`` from being a cut of ``teacher`` (a pruned copy of a member): a
    different embedding, hidden layer or normalization, more filters, a width the teacher lacks."""
    problems = [f"{name} {getattr(student, name)!r} (the teacher's {getattr(teacher, name)!r})"
                for name in ("embedding_dim", "hidden_dim", "batch_norm") if getattr(student, name) != getattr(teacher, name)]
    if student.num_filters > teacher.num_filters:
        problems.append(f"num_filters {student.num_filters} (more than the teacher's {teacher.num_filters})")
    missing = sorted(set(student.filter_widths) - set(teacher.filter_widths))
    if missing:
        problems.append(f"filter widths {missing} (not among the teacher's {list(teacher.filter_widths)})")
    return problems


def check_student_init(teacher: ModelConfig, student: ModelConfig) -> None:
    """Refuse, naming ``distill.student_init``, a student that is no cut of the teacher."""
    problems = cut_problems(teacher, student)
    if problems:
        raise ConfigError("distill.student_init: 'teacher' needs a student cut from the teacher's architecture; "
                          "the student has " + "; ".join(problems))


def starts_from_teacher(setting: str, teacher: ModelConfig, student: ModelConfig) -> bool:
    """Whether a student starts as a cut of the teacher: 'teacher' (refused if it is no cut),
    'random' never, 'auto' where it is a cut."""
    if setting == "teacher":
        check_student_init(teacher, student)
        return True
    return setting == "auto" and not cut_problems(teacher, student)


def filter_ranking(teacher: CharCNN, vocab: CharVocab, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """int64 [widths, filters]: each width's filters of the teacher member, most useful first.

    A filter's use is its mean pooled activation over ``texts`` times the L2 norm of its FC input
    column: how much it moves the hidden layer on such texts (activation-based pruning). Ties keep
    the filter order, so the ranking is deterministic."""
    if not texts:
        raise ValueError("filter_ranking needs texts")
    teacher = teacher.eval()
    total = torch.zeros(teacher.cfg.num_filters * len(teacher.cfg.filter_widths), dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            ids, _ = vocab.encode(list(texts[start:start + batch_size]), teacher.cfg.max_length)
            total += teacher.pool(teacher.conv_features(torch.from_numpy(ids))).double().sum(0)
        use = total / len(texts) * teacher.fc1.weight.double().norm(dim=0)
    use = use.reshape(len(teacher.cfg.filter_widths), teacher.cfg.num_filters)
    return torch.stack([torch.from_numpy(np.argsort(-row.numpy(), kind="stable")) for row in use])


def pruned_state(teacher: CharCNN, teacher_vocab: CharVocab, student: CharCNN, student_vocab: CharVocab,
                 ranking: torch.Tensor | None = None) -> dict:
    """The student's state dict with the teacher member's weights wherever the student has them:
    embedding rows by character (PAD and UNK included; a character the teacher never saw keeps the
    student's own row), each student width's convolution (and batch norm) from the teacher's
    convolution of that width, ``num_filters`` of its filters, the FC input columns of those
    filters, the hidden and output layers as they are. The filters kept are each width's first
    ``num_filters`` in ``ranking`` (``filter_ranking``), in the teacher's order; without a ranking,
    the first ones. ``check_student_init`` first."""
    check_student_init(teacher.cfg, student.cfg)
    state = {k: v.detach().clone() for k, v in student.state_dict().items()}
    t_state = teacher.state_dict()
    t_rows = {c: i + 2 for i, c in enumerate(teacher_vocab.chars)}
    rows = [(0, 0), (1, 1)] + [(i + 2, t_rows[c]) for i, c in enumerate(student_vocab.chars) if c in t_rows]
    s_idx, t_idx = (torch.tensor(x) for x in zip(*rows))
    state["embedding.weight"][s_idx] = t_state["embedding.weight"][t_idx]
    nf, t_nf = student.cfg.num_filters, teacher.cfg.num_filters
    columns = []
    for j, w in enumerate(student.cfg.filter_widths):
        i = list(teacher.cfg.filter_widths).index(w)
        kept = torch.arange(nf) if ranking is None else ranking[i][:nf].sort().values
        for part in ("convs", "norms"):
            for name, value in t_state.items():
                if name.startswith(f"{part}.{i}."):
                    key = f"{part}.{j}." + name.split(".", 2)[2]
                    state[key] = value[kept].clone() if value.dim() > 0 else value.clone()
        columns.append(i * t_nf + kept)
    state["fc1.weight"] = t_state["fc1.weight"][:, torch.cat(columns)].clone()
    for name in ("fc1.bias", "fc2.weight", "fc2.bias"):
        state[name] = t_state[name].clone()
    return state


def pack(hard: np.ndarray, soft: np.ndarray, has_hard: np.ndarray, in_pool: np.ndarray) -> np.ndarray:
    """float32 [rows, 2 * labels + 2]: hard labels, soft targets, whether the row has labels, whether
    it is a pool row (a teacher-scored concatenation)."""
    n = len(soft)
    return np.concatenate([np.asarray(hard, np.float32).reshape(n, -1), np.asarray(soft, np.float32).reshape(n, -1),
                           np.asarray(has_hard, np.float32).reshape(n, 1), np.asarray(in_pool, np.float32).reshape(n, 1)], axis=1)


def num_labels(packed: np.ndarray | torch.Tensor) -> int:
    return (packed.shape[1] - 2) // 2


def in_pool(packed: np.ndarray) -> np.ndarray:
    """bool [rows]: the rows that are teacher-scored concatenations."""
    return np.asarray(packed)[:, -1] > 0.5


def concat_pool(texts: Sequence[str], y: np.ndarray, per_row: int, seed: int) -> tuple[list[str], np.ndarray]:
    """``per_row`` concatenations per labeled row (text i + " " + a random text j, tags i | j), to be
    scored by the teacher; deterministic in ``seed``."""
    return concat_pairs(texts, y, float(per_row), np.random.default_rng([seed, 7]))


def draw_epoch_rows(texts: Sequence[str], packed: np.ndarray, concat_rate: float, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """An epoch's rows of a student: every non-pool row, and ``concat_rate`` x (labeled non-pool
    rows) drawn from the pool without replacement (all of it if the pool is smaller)."""
    pool = in_pool(packed)
    base, drawn = np.flatnonzero(~pool), np.flatnonzero(pool)
    want = int(round(concat_rate * float(packed[base, -2].sum())))
    if len(drawn) > want:
        drawn = np.sort(rng.choice(drawn, size=want, replace=False))
    keep = np.concatenate([base, drawn])
    return [texts[i] for i in keep], packed[keep]


def packed_examples(texts: list[str], y: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Rows known only by their labels (alias examples) as packed targets: soft = hard."""
    return texts, pack(y, y, np.ones(len(y)), np.zeros(len(y)))


class DistillLoss(nn.Module):
    """``alpha`` x hard loss + (1 - alpha) x T^2 x soft loss on labeled rows; T^2 x soft loss alone on
    rows without labels. ``base`` is the loss of ordinary training (BCE-with-logits with its class
    weighting), applied to both parts; soft targets are the teacher's probabilities at temperature
    T (``sigmoid(logit(p) / T)``) against the student's ``logits / T``."""

    def __init__(self, base: nn.BCEWithLogitsLoss, alpha: float, temperature: float) -> None:
        super().__init__()
        self.alpha, self.t = float(alpha), float(temperature)
        self.base = base
        self.base.reduction = "none"

    def forward(self, logits: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        n = logits.shape[1]
        hard, soft, has_hard = packed[:, :n], packed[:, n:2 * n], packed[:, 2 * n]
        if self.t != 1.0:
            soft = torch.sigmoid(torch.logit(soft.clamp(EPS, 1 - EPS)) / self.t)
        soft_loss = self.base(logits / self.t, soft).mean(1) * self.t ** 2
        hard_loss = self.base(logits, hard).mean(1)
        w = self.alpha * has_hard
        return ((1 - w) * soft_loss + w * hard_loss).mean()


class LinearTeacher:
    """TF-IDF + LinearSVC fit on the training split (tagging.baselines), its margins calibrated to
    probabilities per class on the validation split (Platt scaling: a 1-D logistic regression),
    so they can be averaged with the char-CNN's probabilities. Picklable (it rides to Ray actors)."""

    def __init__(self, seed: int = 42) -> None:
        self.seed = seed

    def fit(self, train_texts: list[str], y_train: np.ndarray, val_texts: list[str], y_val: np.ndarray,
            labels) -> "LinearTeacher":
        from sklearn.linear_model import LogisticRegression

        from tagging.baselines import SplitData, TfidfLinearBaseline

        base = TfidfLinearBaseline("svm", seed=self.seed)
        base.fit(SplitData(labels, {"train": train_texts, "val": val_texts}, {"train": y_train, "val": y_val}, {}))
        self.vectorizer, self.model = base.vectorizer, base.model
        margins = self.model.decision_function(self.vectorizer.transform(val_texts))
        self.platt = []
        for k in range(y_val.shape[1]):
            yk = y_val[:, k] > 0.5
            if 0 < yk.sum() < len(yk):
                lr = LogisticRegression(C=1.0).fit(margins[:, k:k + 1], yk)
                self.platt.append((float(lr.coef_[0, 0]), float(lr.intercept_[0])))
            else:  # no validation positive (or negative): the SVM's own margin scale
                self.platt.append((1.0, 0.0))
        return self

    def probs(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [rows, labels] calibrated probabilities."""
        margins = self.model.decision_function(self.vectorizer.transform(list(texts)))
        a, b = np.array(self.platt, dtype=np.float64).T
        return (1.0 / (1.0 + np.exp(-(margins * a + b)))).astype(np.float32)


def blend(p_cnn: np.ndarray, p_linear: np.ndarray | None, weight: float) -> np.ndarray:
    """The teacher's probabilities: ``(1 - weight) * p_cnn + weight * p_linear``."""
    if p_linear is None or weight <= 0:
        return p_cnn
    return ((1.0 - weight) * p_cnn + weight * p_linear).astype(np.float32)
