"""Training resume that cannot lie: a run's record of its inputs, checked before any Ray Train work."""

from __future__ import annotations

import json
import logging

import pytest

from tagging.artifact import code_version, package_versions
from tagging.dist.training import RUN_RECORD, RunMismatch, check_resume, record_differences


def _record(**changes) -> dict:
    rec = {"data_hash": "a" * 64, "config": {"seed": 42, "learning_rate": 0.003, "max_failures": 2, "model": {"filter_widths": (1, 2)}},
           "labels": ["nlp", "vision"], "vocabulary": ["a", "b"], "code": {"tagging": "0.1.0", "git_sha": "abc"}}
    for key, value in changes.items():
        *path, last = key.split("__")
        node = rec
        for p in path:
            node = node[p]
        node[last] = value
    return rec


def test_a_new_run_writes_its_record(tmp_path):
    check_resume(str(tmp_path), "run-a", 2, _record())
    saved = json.loads((tmp_path / "run-a" / RUN_RECORD).read_text())
    assert saved["data_hash"] == "a" * 64 and saved["config"]["model"]["filter_widths"] == [1, 2] and saved["code"]["git_sha"] == "abc"


@pytest.mark.parametrize("change, words", [
    ({"data_hash": "b" * 64}, "data (hash aaaaaaaaaaaa, now bbbbbbbbbbbb)"),
    ({"config__learning_rate": 0.01}, "config (learning_rate)"),
    ({"config__model__filter_widths": (1, 3)}, "config (model.filter_widths)"),
    ({"labels": ["nlp"]}, "labels"),
    ({"vocabulary": ["a"]}, "vocabulary"),
])
def test_resuming_with_other_inputs_is_refused_in_one_line(tmp_path, change, words):
    check_resume(str(tmp_path), "run-a", 1, _record())
    (tmp_path / "run-a" / "epoch-0000").mkdir()
    with pytest.raises(RunMismatch) as err:
        check_resume(str(tmp_path), "run-a", 1, _record(**change))
    message = str(err.value)
    assert words in message and "--run-name" in message and "--fresh" in message and "\n" not in message


def test_a_later_members_checkpoints_count_and_a_missing_record_is_refused(tmp_path):
    (tmp_path / "run-a-m1" / "epoch-0003").mkdir(parents=True)
    with pytest.raises(RunMismatch, match="no readable tagging_run.json"):
        check_resume(str(tmp_path), "run-a", 2, _record())


def test_same_inputs_resume_other_code_or_neutral_settings_only_warn(tmp_path, caplog):
    check_resume(str(tmp_path), "run-a", 1, _record())
    (tmp_path / "run-a" / "epoch-0000").mkdir()
    caplog.set_level(logging.INFO, logger="tagging")
    check_resume(str(tmp_path), "run-a", 1, _record(config__max_failures=5))
    assert caplog.records == []
    check_resume(str(tmp_path), "run-a", 1, _record(code={"tagging": "0.2.0", "git_sha": "def"}))
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1 and "other code" in lines[0] and "abc" in lines[0] and "def" in lines[0]


def test_a_run_without_checkpoints_starts_over_with_a_new_record(tmp_path):
    check_resume(str(tmp_path), "run-a", 1, _record())
    check_resume(str(tmp_path), "run-a", 1, _record(data_hash="c" * 64))  # nothing to resume: no refusal
    assert json.loads((tmp_path / "run-a" / RUN_RECORD).read_text())["data_hash"] == "c" * 64


def test_differences_ignore_the_code():
    assert record_differences(_record(), _record(code={"tagging": "9"})) == []


def test_code_version_is_in_the_package_versions():
    code = code_version()
    assert code["tagging"] and "git_sha" in code
    assert code["git_sha"] is None or len(code["git_sha"]) == 40
    assert package_versions()["git_sha"] == code["git_sha"]
