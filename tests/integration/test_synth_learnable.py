"""The generated corpus is learnable but not trivial: a fitted TF-IDF baseline lands between chance and perfect.

Moved from tests/unit/test_synth.py: it fits a model on 3,000 generated rows.
"""

from __future__ import annotations

import numpy as np
import pytest

from tagging import synth


def test_learnable_but_not_trivial():
    """A char n-gram TF-IDF + one-vs-rest logistic regression baseline must
    land clearly above chance and clearly below perfect."""
    sk = pytest.importorskip("sklearn")
    del sk
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import MultiLabelBinarizer

    df = synth.generate_corpus(3000, seed=0)
    y = MultiLabelBinarizer(classes=list(synth.TAGS)).fit_transform(df["tags"])
    x_tr, x_te, y_tr, y_te = train_test_split(df["text"].tolist(), y, test_size=0.3,
                                              random_state=0)
    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=2,
                          sublinear_tf=True)
    clf = OneVsRestClassifier(LogisticRegression(max_iter=1000, C=10.0))
    clf.fit(vec.fit_transform(x_tr), y_tr)
    pred = clf.predict(vec.transform(x_te))
    f1 = f1_score(y_te, pred, average="weighted", zero_division=0)
    assert 0.6 <= f1 <= 0.98, f1
    assert np.asarray(pred).sum() > 0
