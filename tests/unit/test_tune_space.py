"""The tuning search space (Ray-free parts)."""

import pytest


def test_tune_base_point_is_the_defaults_when_they_lie_in_the_space():
    from tagging.config import TrainConfig, from_dict, merge, to_dict
    from tune.space import DEFAULT_SPACE, base_point

    base = to_dict(TrainConfig())
    point = base_point(DEFAULT_SPACE, base)
    assert point is not None and point["model.num_filters"] == base["model"]["num_filters"]
    # lists travel through Tune as "1,2,3" strings (Tune walks into the lists of a preset point;
    # Optuna's choices must be scalars); the config reads them back
    assert point["model.filter_widths"] == "1,2,3,4,5,6,7,8,9,10"
    assert from_dict(merge(base, point)).model.filter_widths == tuple(base["model"]["filter_widths"])
    assert base_point({**DEFAULT_SPACE, "model.num_filters": {"choice": [7, 9]}}, base) is None
    assert base_point({"learning_rate": {"grid": [0.1, 0.2]}}, base) is None
    assert base_point({"learning_rate": {"loguniform": [1e-4, 1e-3]}}, base) is None


@pytest.mark.parametrize("space, message", [
    ({"model.dropuot": {"uniform": [0.0, 0.3]}}, "unknown config field 'model.dropuot'"),
    ({"model.dropout": {"uniform": [0.0, 1.5]}}, r"'model.dropout': model.dropout: must be in \[0, 1\)"),
    ({"max_epochs": {"choice": [3, 3.5]}}, "max_epochs: expected an integer, got 3.5"),
    ({"imbalance": {"choice": ["pos_weight", "asl"]}}, "imbalance: expected one of"),
    ({"learning_rate": {"loguniform": [0, 1e-2]}}, "loguniform needs low > 0"),
    ({"learning_rate": {"uniform": [1e-2, 1e-3]}}, "needs \\[low, high\\] with low < high"),
    ({"learning_rate": {"normal": [0, 1]}}, "unknown distribution 'normal'"),
    ({"batch_size": {"choice": []}}, "choice needs a non-empty list"),
    ({"batch_size": {"choice": [8], "grid": [16]}}, "expected one distribution"),
    ({"alias_examples": {"fixed": True}}, "needs data.tags_file"),
])
def test_a_bad_search_space_is_refused_before_any_trial(space, message):
    from tagging.config import TrainConfig, to_dict
    from tune.space import check_space

    with pytest.raises(ValueError, match=message):
        check_space(space, to_dict(TrainConfig()))


def test_the_default_space_and_file_overrides_pass_the_check(tmp_path):
    from tagging.config import DataConfig, TrainConfig, to_dict
    from tune.space import DEFAULT_SPACE, check_space, load_space

    base = to_dict(TrainConfig(data=DataConfig(tags_file="tags.json")))
    check_space(DEFAULT_SPACE, base)
    (tmp_path / "s.json").write_text('{"model.filter_widths": [2, 3], "weight_decay": null, "model.num_filters": {"randint": [8, 17]}}')
    space = load_space(tmp_path / "s.json")
    assert space["model.filter_widths"] == {"fixed": [2, 3]} and "weight_decay" not in space
    check_space(space, base)
