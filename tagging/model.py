"""The character CNN: embedding -> Conv1d (several widths, SAME padding) -> masked global
max-pool -> FC -> dropout -> FC -> one logit per tag.

Export-friendly by construction: padding sizes come from the kernel widths (constants), the
pool is ``amax`` over the length axis, and the mask comes from ``ids != PAD`` — no Python
arithmetic on runtime shapes, so ONNX keeps batch and length dynamic.

Padding invariance: PAD embeds to a zero vector (``padding_idx``), which is exactly what SAME
zero-padding adds at a text's end; and padded positions are masked out of the max-pool. So a
text scores the same alone or padded to any length.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tagging.config import ModelConfig
from tagging.vocab import PAD_ID


class CharCNN(nn.Module):
    def __init__(self, vocab_size: int, num_labels: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = nn.Embedding(vocab_size, cfg.embedding_dim, padding_idx=PAD_ID)
        self.convs = nn.ModuleList(nn.Conv1d(cfg.embedding_dim, cfg.num_filters, w) for w in cfg.filter_widths)
        # Eval-mode BatchNorm is a per-channel affine map: position-wise, so padding invariance holds.
        self.norms = nn.ModuleList((nn.BatchNorm1d(cfg.num_filters) if cfg.batch_norm else nn.Identity()) for _ in cfg.filter_widths)
        # SAME padding for width w: (w-1)//2 on the left, w//2 on the right (constants).
        self.pads = [((w - 1) // 2, w // 2) for w in cfg.filter_widths]
        features = cfg.num_filters * len(cfg.filter_widths)
        self.fc1 = nn.Linear(features, cfg.hidden_dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc2 = nn.Linear(cfg.hidden_dim, num_labels)
        self.masked = True  # False only in ``unpadded`` copies

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: int64 [batch, length], 0 = PAD -> logits: float [batch, num_labels]."""
        return self.head(self.pool(self.conv_features(ids)))

    def conv_features(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """The activations before the pool, one tensor per filter width: float [batch, filters,
        length], >= 0 (after ReLU), zero at PAD positions. Output position ``p`` of width ``w``
        reads the characters ``[p - (w-1)//2, p - (w-1)//2 + w)`` (SAME padding)."""
        mask = (ids != PAD_ID).unsqueeze(1)  # [B, 1, L]
        x = self.embedding(ids).transpose(1, 2)  # [B, E, L]
        out = []
        for conv, norm, pad in zip(self.convs, self.norms, self.pads):
            z = F.relu(norm(conv(F.pad(x, pad))))  # [B, F, L], >= 0
            # ReLU outputs are >= 0, so zeroing padded positions never changes the max of a
            # non-empty text: the pool sees only the text's own positions.
            out.append(z * mask.to(z.dtype) if self.masked else z)
        return out

    @staticmethod
    def pool(features: list[torch.Tensor]) -> torch.Tensor:
        """Global max over positions: float [batch, filters x widths], width by width."""
        return torch.cat([z.amax(dim=-1) for z in features], dim=1)

    @staticmethod
    def pooled_positions(features: list[torch.Tensor]) -> torch.Tensor:
        """Where each pooled value comes from: int64 [batch, filters x widths], the first maximum."""
        return torch.cat([z.argmax(dim=-1) for z in features], dim=1)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Pooled features float [batch, filters x widths] -> logits float [batch, num_labels]."""
        return self.fc2(self.dropout(F.relu(self.fc1(h))))


class EnsembleCNN(nn.Module):
    """K char-CNNs (a seed ensemble) in one graph: their probabilities are averaged.

    The output is still logits (the logit of the mean probability, clamped away from 0 and 1),
    so ONNX Runtime, the thresholds and every consumer treat it exactly like a single model.
    Averaging probabilities measured slightly better than averaging logits on the real data.
    """

    EPS = 1e-7

    def __init__(self, members: list[CharCNN]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.cfg = members[0].cfg

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        p = torch.stack([torch.sigmoid(m(ids)) for m in self.members]).mean(dim=0)
        p = p.clamp(self.EPS, 1.0 - self.EPS)
        return torch.log(p) - torch.log1p(-p)


def build_model(vocab_size: int, num_labels: int, cfg: ModelConfig) -> nn.Module:
    """The model ``cfg`` describes: one CharCNN, or an EnsembleCNN of ``cfg.ensemble`` of them."""
    if cfg.ensemble <= 1:
        return CharCNN(vocab_size, num_labels, cfg)
    return EnsembleCNN([CharCNN(vocab_size, num_labels, cfg) for _ in range(cfg.ensemble)])


def assemble(vocab_size: int, num_labels: int, cfg: ModelConfig, best_states: list[dict]) -> nn.Module:
    """The exported model (eval mode) from the members' best weights, one state dict a member."""
    if len(best_states) != cfg.ensemble:
        raise ValueError(f"{len(best_states)} trained members for model.ensemble={cfg.ensemble}")
    model = build_model(vocab_size, num_labels, cfg)
    for member, state in zip(members(model), best_states):
        member.load_state_dict(state)
    return model.eval()


def members(model: nn.Module) -> list[CharCNN]:
    """The CharCNNs inside ``model`` (itself, for a single model)."""
    return list(model.members) if isinstance(model, EnsembleCNN) else [model]


def unpadded(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for batches without padding (every text exactly as long as the batch,
    none empty): it skips the PAD mask before the pool, which such batches do not need, so it
    gives ``model``'s scores on them (not on padded batches) from a cheaper ONNX graph
    (tagging.export.export_unpadded, run by tagging.onnx_scoring on exact-length batches)."""
    import copy

    out = copy.deepcopy(model).eval()
    for member in members(out):
        member.masked = False
    return out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
