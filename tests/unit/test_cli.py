"""The command line: every command's help, config checks before any Ray work, --set, tune's option checks.

The commands' implementations are replaced by stubs here: nothing trains and nothing starts Ray.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest
import typer
from typer.testing import CliRunner

from tagging.cli import app

COMMANDS = {"train", "distill", "config", "evaluate", "register", "predict", "synth", "bench-train", "baselines", "report", "explain", "score",
            "read-scores",
            "quantize", "bench-score", "tune"}


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_every_command_has_help():
    assert set(typer.main.get_command(app).commands) == COMMANDS
    top = invoke("--help")
    assert top.exit_code == 0 and all(name in top.output for name in COMMANDS) and "--quiet" in top.output
    for name in sorted(COMMANDS):
        res = invoke(name, "--help")
        assert res.exit_code == 0, (name, res.output)
    assert invoke().exit_code in (0, 2)  # no command: the help


def test_the_cli_imports_no_heavy_module():
    code = ("import sys, tagging.cli, jobs.score_nightly, jobs.train, jobs.tune, jobs.evaluate, jobs.distill; "
            "heavy = [m for m in ('ray', 'torch', 'pandas', 'numpy', 'pyarrow', 'onnxruntime', 'yaml', 'mlflow') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture
def fake_training(monkeypatch):
    """tagging.dist.training replaced by a stub that records run_training's arguments."""
    calls = []

    def run_training(cfg, data, out, **kwargs):
        calls.append((cfg, data, out, kwargs))
        return types.SimpleNamespace(path=out, manifest={"metrics": {"overall": {"f1": 0.5}}})

    monkeypatch.setitem(sys.modules, "tagging.dist.training", types.SimpleNamespace(run_training=run_training))
    return calls


def test_train_options_config_file_and_set(tmp_path, fake_training):
    path = tmp_path / "c.yaml"
    path.write_text("max_epochs: 9\nlearning_rate: 1e-3\nmodel:\n  dropout: 0.3\n  num_filters: 8\n")
    res = invoke("train", "--data", "d.parquet", "--out", str(tmp_path / "m"), "--config", str(path), "--max-epochs", "2",
                 "--set", "model.dropout=0.2", "--set", "model.filter_widths=1,2", "--set", "imbalance=none", "--fresh",
                 "--workers", "0", "--run-name", "r1")
    assert res.exit_code == 0, res.output
    cfg, data, out, kwargs = fake_training[0]
    # precedence: command line (flags and --set) > file > defaults
    assert (cfg.max_epochs, cfg.learning_rate, cfg.model.dropout, cfg.model.num_filters, cfg.model.filter_widths) == (2, 1e-3, 0.2, 8, (1, 2))
    assert (cfg.imbalance, cfg.workers, cfg.batch_size, data) == ("none", 0, 32, ["d.parquet"])
    assert kwargs["fresh"] is True and kwargs["run_name"] == "r1"
    assert json.loads(res.stdout.strip().splitlines()[-1]) == {"artifact": str(tmp_path / "m"), "test": {"f1": 0.5}}


@pytest.mark.parametrize("text, message", [
    ("model:\n  dropout: high\n", "model.dropout: expected a number, got 'high'"),
    ("max_epochs: 3.7\n", "max_epochs: expected an integer, got 3.7"),
    ("modle:\n  dropout: 0.1\n", "unknown config field 'modle'; did you mean model?"),
    ("use_gpu: [1]\n", "use_gpu: expected true or false"),
    ("imbalance: magic\n", "imbalance: expected one of pos_weight, inverse_count, none"),
    ("ema_decay: 1\n", "ema_decay: must be in [0, 1)"),
])
def test_a_bad_config_file_fails_naming_the_field_before_training(tmp_path, fake_training, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    res = invoke("train", "--data", "d.parquet", "--config", str(path))
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 1 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), res.output
    assert not fake_training


@pytest.mark.parametrize("args, message", [
    (["--set", "model.dropuot=0.1"], "unknown config field 'model.dropuot'; did you mean model.dropout?"),
    (["--set", "model.dropout=high"], "model.dropout: expected a number, got 'high'"),
    (["--set", "dropout"], "expected KEY=VALUE"),
    (["--set", "max_epochs=3", "--max-epochs", "4"], "max_epochs: given by its own option and by --set"),
])
def test_bad_set_is_a_usage_error(fake_training, args, message):
    res = invoke("train", "--data", "d.parquet", *args)
    assert res.exit_code == 2 and message in " ".join(res.output.split()), res.output
    assert not fake_training


def test_config_command_lists_and_checks(tmp_path):
    res = invoke("config")
    assert res.exit_code == 0
    assert "model.dropout: float = 0.1\n    Dropout probability" in res.output and "imbalance: pos_weight | inverse_count | none" in res.output
    res = invoke("config", "--set", "model.filter_widths=[3, 4]", "--set", "learning_rate=1e-2", "--json")
    cfg = json.loads(res.stdout)
    assert res.exit_code == 0 and cfg["model"]["filter_widths"] == [3, 4] and cfg["learning_rate"] == 0.01
    (tmp_path / "c.json").write_text(json.dumps({"batch_size": "many"}))
    res = invoke("config", "--config", str(tmp_path / "c.json"))
    assert res.exit_code == 1 and res.stderr.strip() == "error: batch_size: expected an integer, got 'many'"


@pytest.fixture
def fake_tune(monkeypatch):
    import tune.search

    calls = []
    monkeypatch.setattr(tune.search, "run_tune", lambda base, data, out, **kw: calls.append((base, kw)) or {"trials": kw["trials"]})
    return calls


@pytest.mark.parametrize("args, message", [
    (["--max-epochs", "3", "--grace-period", "5"], "must be between 1 and --max-epochs (3), got 5"),
    (["--trials", "0"], "--trials must be >= 1, got 0"),
    (["--max-concurrent", "0"], "--max-concurrent must be >= 1"),
    (["--workers-per-trial", "0"], "--workers-per-trial must be >= 1"),
    (["--cpus-per-worker", "0"], "--cpus-per-worker must be > 0"),
    (["--search", "grid"], "'grid' is not one of 'random', 'optuna'"),
])
def test_tune_refuses_impossible_options_up_front(fake_tune, args, message):
    res = invoke("tune", "--data", "d.parquet", *args)
    assert res.exit_code == 2 and message in " ".join(res.output.split()), res.output
    assert not fake_tune


def test_small_tune_runs_derive_the_grace_period(fake_tune):
    from tune.search import asha_grace_period

    res = invoke("tune", "--data", "d.parquet", "--trials", "4", "--max-epochs", "3", "--set", "model.num_filters=8", "--ensemble", "1")
    assert res.exit_code == 0, res.output
    base, kw = fake_tune[0]
    assert kw["grace_period"] is None and kw["max_epochs"] == 3 and base.model.num_filters == 8 and base.model.ensemble == 1
    assert [asha_grace_period(e) for e in (1, 3, 8, 40, 100)] == [1, 1, 2, 10, 10]
    assert asha_grace_period(3, 2) == 2


def test_logging_goes_to_stderr_with_the_module_name(capsys):
    import logging

    from tagging.logs import setup_logging

    log = logging.getLogger("tagging.example")
    try:
        setup_logging(0)
        setup_logging(0)  # idempotent: one handler
        log.info("rows %d", 3)
        log.debug("hidden")
        setup_logging(-1)  # --quiet
        log.info("hidden")
        log.warning("careful")
        out, err = capsys.readouterr()
        assert out == "" and err.splitlines() == ["[tagging.example] rows 3", "[tagging.example] warning: careful"]
    finally:
        setup_logging(0)


def test_fresh_discards_only_the_named_runs(tmp_path):
    from tagging.dist.training import discard_runs, member_run_name

    for name in ("r1", "r1-m1", "r2"):
        (tmp_path / name / "checkpoint_000000").mkdir(parents=True)
    discard_runs(str(tmp_path), [member_run_name("r1", k) for k in range(3)])  # r1-m2 never existed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r2"]
