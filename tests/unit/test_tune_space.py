"""The tuning search space (Ray-free parts)."""

import pytest

pytestmark = pytest.mark.unit


def test_tune_base_point_is_the_defaults_when_they_lie_in_the_space():
    from tagging.config import TrainConfig, to_dict
    from tune.space import DEFAULT_SPACE, base_point

    base = to_dict(TrainConfig())
    point = base_point(DEFAULT_SPACE, base)
    assert point is not None and point["model.num_filters"] == base["model"]["num_filters"]
    assert point["model.filter_widths"] == tuple(base["model"]["filter_widths"])
    assert base_point({**DEFAULT_SPACE, "model.num_filters": {"choice": [7, 9]}}, base) is None
    assert base_point({"learning_rate": {"grid": [0.1, 0.2]}}, base) is None
    assert base_point({"learning_rate": {"loguniform": [1e-4, 1e-3]}}, base) is None
