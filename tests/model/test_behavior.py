"""Behavioral tests on a trained artifact: minimum functionality, invariance, directional.

On the artifact given with ``pytest -m model --model DIR``, else on a small model the suite
trains on generated data (tests/model/conftest.py), so CI runs this tier too. The cases are data
(tagging.report.BEHAVIOR_CASES), shared with the report's behavioral summary; a case whose tag
the artifact does not have is skipped.
"""

from __future__ import annotations

import pytest

from tagging.report import BEHAVIOR_CASES, check_case


@pytest.fixture(scope="module")
def predictor(behavior_artifact):
    from tagging.evaluation import Predictor

    return Predictor(behavior_artifact)


def _cases(kind):
    return pytest.mark.parametrize("case", [c for c in BEHAVIOR_CASES if c.kind == kind], ids=lambda c: c.name)


def _check(predictor, case):
    result = check_case(predictor, case)
    if result["status"] == "skip":
        pytest.skip(result["detail"])
    assert result["status"] == "pass", f"{case.kind} {case.name}: {result['detail']} for {case.text!r}"


@_cases("mft")
def test_minimum_functionality(predictor, case):
    """An obvious text gets its tag."""
    _check(predictor, case)


@_cases("invariance")
def test_invariance(predictor, case):
    """Case changes and a small typo in a non-keyword word leave the predicted tags unchanged."""
    _check(predictor, case)


@_cases("directional")
def test_directional(predictor, case):
    """Adding the framework's name raises that framework tag's probability."""
    _check(predictor, case)
