"""The Arrow tables the scoring job writes: scored rows and rejects (Ray-free).

The scores themselves come from tagging.onnx_scoring.OnnxScorer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from tagging.onnx_scoring import Scores

SCORED_SCHEMA = pa.schema([
    pa.field("id", pa.string(), nullable=False),
    pa.field("tags", pa.list_(pa.string())),
    pa.field("scores", pa.map_(pa.string(), pa.float32())),
    pa.field("model_version", pa.string()),
    pa.field("truncated", pa.bool_()),
    pa.field("source", pa.string()),
])
# Part files keep column statistics where a reader can use them (ids, versions, sources), not on
# the tags and scores, whose min/max tag names filter nothing (they cost ~0.4 us a row to write).
STATISTICS = ["id", "model_version", "truncated", "source"]
REJECTS_SCHEMA = pa.schema([
    pa.field("id", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("source", pa.string()),
    pa.field("raw", pa.string()),
])


def scored_table(ids: pa.Array, sources: pa.Array, s: Scores, labels: Sequence[str], model_version: str,
                 top_k: int | None = None) -> pa.Table:
    """Output rows: id, tags (list), scores (map tag -> probability: every tag, or the top k), ...

    Built column-wise from numpy (no Python loop over rows).
    """
    n, k = s.probs.shape
    label_arr = pa.array(list(labels), pa.string())
    rows, cols = np.nonzero(s.tags)
    tag_offsets = np.concatenate([[0], np.cumsum(s.tags.sum(1))]).astype(np.int32)
    tags = pa.ListArray.from_arrays(pa.array(tag_offsets), label_arr.take(pa.array(cols, pa.int32())))
    if top_k is None or top_k >= k:
        keys_idx = np.tile(np.arange(k, dtype=np.int32), n)
        values = s.probs.reshape(-1)
        width = k
    else:
        width = max(int(top_k), 0)
        order = np.argsort(-s.probs, axis=1, kind="stable")[:, :width]
        keys_idx = order.reshape(-1).astype(np.int32)
        values = np.take_along_axis(s.probs, order, axis=1).reshape(-1)
    offsets = pa.array(np.arange(0, n * width + 1, width, dtype=np.int32) if width else np.zeros(n + 1, np.int32))
    scores = pa.MapArray.from_arrays(offsets, label_arr.take(pa.array(keys_idx)), pa.array(values, pa.float32()))
    version = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([model_version])).cast(pa.string())
    return pa.Table.from_arrays(
        [ids, tags, scores, version, pa.array(s.truncated, pa.bool_()), sources], schema=SCORED_SCHEMA)
