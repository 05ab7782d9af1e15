"""The behavioral tier's artifact: the one given with ``--model DIR``, else one the suite trains.

The trained one is a small char-CNN, trained in-process (no Ray) on generated data, sized so that
it passes every behavioral case (tagging.report.BEHAVIOR_CASES) while CI stays within its budget.
"""

from __future__ import annotations

import pytest

# Measured (2026-12-02, 2 cores): one such model passes 15 of the 17 cases (which two fail depends
# on rows, epochs and seed); a 3-member seed ensemble passed all 17 on corpora of seeds 2 and 7
# (test F1 0.82 / 0.81) and trains in about 70 s. Its thresholds are chosen as `tagging train`
# chooses them (5-fold CV policy): with the in-process fallback rule (threshold_min_support) the
# same ensemble failed invariance typo-filler on seed 2 (re-measured 2026-12-06). The default weight
# average (ema_decay 0.998) alone scored 0.016 lower on these short runs; with the better of the
# average and the trained weights kept, it trains the same models as without (docs/measurements.md).
BEHAVIOR_ROWS = 3000  # generated documents (train/val/test split as in training)
BEHAVIOR_MODEL = {
    "model.num_filters": 48, "model.filter_widths": [1, 2, 3, 4, 5], "model.embedding_dim": 32, "model.hidden_dim": 64,
    "model.ensemble": 3, "max_epochs": 10, "batch_size": 32, "learning_rate": 1e-2,
}


@pytest.fixture(scope="session")
def behavior_artifact(request, tmp_path_factory):
    from tagging.artifact import load_artifact

    path = request.config.getoption("--model")
    if path:
        return load_artifact(path)
    from tagging.config import load_config
    from tagging.local import train_local
    from tagging.synth import generate_corpus, write_corpus

    base = tmp_path_factory.mktemp("behavior")
    data = base / "corpus.parquet"
    write_corpus(generate_corpus(BEHAVIOR_ROWS, seed=2), str(data))
    return train_local([str(data)], str(base / "model"), load_config(None, BEHAVIOR_MODEL), model_version="test-behavior",
                       cv_thresholds=True)
