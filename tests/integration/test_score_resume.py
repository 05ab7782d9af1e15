"""Kill-and-rerun of `tagging score` / `jobs.score_nightly` as separate processes, each with its
own local Ray: SIGKILL at named points (reading, scoring, committing, the duplicate pass,
before _SUCCESS) and a real SIGKILL from outside; then `bench-score` on tiny data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import conftest_score as cs
from tagging.artifact import load_artifact

pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return cs.trained_artifact(tmp_path_factory.getbasetemp() / "score-artifact")


@pytest.fixture
def ray_tmp():
    with cs.private_ray_tmp("sbr-") as path:
        yield path


def _let_core_settle(ray_tmp: Path, timeout: float = 10) -> list[int]:
    """After the driver's SIGKILL its raylet and GCS normally die with it (Ray binds them to the
    parent's death), and Ray's dashboard / runtime-env agents linger up to ~90 s. Whether the core
    processes go too is Ray's business, not ours (on a loaded CI machine they have outlived the
    driver): give them a moment, then rerun next to whatever is left -- leftovers must not block
    or corrupt the rerun, which is what these tests check. The fixture kills them at the end."""
    t0 = time.time()
    while cs.ray_pids(ray_tmp, core_only=True) and time.time() - t0 < timeout:
        time.sleep(0.5)
    left = cs.ray_pids(ray_tmp, core_only=True)
    if left:
        print(f"rerunning next to {len(left)} core Ray process(es) of the killed run: {left}")
    return left


def _score_args(artifact, inputs, out) -> list[str]:
    return ["score", "--model", str(artifact), "--input", str(inputs), "--output", str(out), "--date", cs.DATE]


def _check_exact(artifact, inputs, date_dir, store: cs.Store | None = None) -> dict:
    store = store or cs.Store("/")
    expected = cs.expected_outcome([str(inputs)], load_artifact(artifact).config.data)
    scored, rejects = store.read_output(str(date_dir))
    ids = scored.column("id").to_pylist()
    assert len(ids) == len(set(ids)), "duplicate ids in the output"
    assert set(ids) == set(expected["valid"]), "output ids differ from the valid input ids"
    summary = store.read_json(f"{date_dir}/summary.json")
    assert summary["rows_read"] == expected["records"] == scored.num_rows + rejects.num_rows
    assert summary["rows_scored"] == len(expected["valid"])
    manifest = store.read_json(f"{date_dir}/_SUCCESS")
    assert sorted(e["path"] for e in manifest["files"]) == store.names(str(date_dir), "part-")
    return summary


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return cs.Store(str(tmp_path / "store"))
    return cs.Store(request.getfixturevalue("s3_server").bucket())


def test_killed_at_every_point_then_rerun_is_exact(artifact, tmp_path, ray_tmp, store):
    """On local disk and on S3 (moto): kills while reading, scoring, committing, in the duplicate
    pass and before _SUCCESS, then a rerun that resumes to the exact output."""
    inputs = store.put(cs.write_bad_inputs(tmp_path / "in", rows=900, seed=31), "in")  # 5 units: 3 row groups, jsonl, csv
    out = store.uri("out")
    date_dir = store.date_dir(out)
    # A killed driver's lease: released at once on local disk (flock); on S3 the rerun, on the same
    # machine, sees the holder's process is gone and takes the lease over at once (the default 120 s
    # ttl is never waited out: --wait 60 would give up first and fail the test).
    args = _score_args(artifact, inputs, out) + ["--wait", "60"]
    env = {"RAY_TMPDIR": str(ray_tmp)}
    first_attempts: dict[str, str] = {}
    # The driver is SIGKILLed (by itself, or by the worker that reaches the point) at each point in
    # turn: while scoring (an actor's 2nd fragment), committing (2nd unit: files moved, no marker),
    # reading, in the duplicate pass, and after summary.json but before _SUCCESS.
    for point in ["score@2", "commit@2", "read", "dedup", "summary"]:
        res = cs.run_cli(args, {**env, "SERVE_BATCH_FAULT": point})
        assert res.returncode == -signal.SIGKILL, (point, res.returncode, res.stderr[-2000:])
        assert not store.exists(f"{date_dir}/_SUCCESS")
        markers = {n[:-len(".json")]: store.read_json(f"{date_dir}/_commits/{n}")["attempt"]
                   for n in store.names(f"{date_dir}/_commits", suffix=".json")}
        for unit, attempt in first_attempts.items():  # committed units are never redone
            assert markers[unit] == attempt, f"{unit} was rescored after {point}"
        if point == "commit@2":
            assert len(markers) == len(first_attempts) + 1
            stray = {n.rsplit("-", 1)[0][len("part-"):] for n in store.names(date_dir, "part-", ".parquet")} - set(markers)
            assert stray, "the killed commit should have left moved files without a marker"
        first_attempts.update(markers)
        _let_core_settle(ray_tmp)
    assert len(first_attempts) == 5
    res = cs.run_cli(args, env)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = _check_exact(artifact, inputs, date_dir, store)
    assert summary["units"]["scored_this_run"] == 0 and summary["rejects_by_reason"]["duplicate_id"] > 0
    # A finished date: the same command is a no-op.
    res = cs.run_cli(args, env)
    assert res.returncode == 0 and json.loads(res.stdout.strip().splitlines()[-1])["status"] == "already_complete"


def test_sigkill_of_the_nightly_job_midway_then_rerun(artifact, tmp_path, ray_tmp):
    import pyarrow.parquet as pq

    from tagging.synth import generate_corpus, write_corpus

    inputs = tmp_path / "in"
    inputs.mkdir()
    for k in range(3):  # 3 files x 10 row groups = 30 units; ids repeat across files (duplicate pass)
        write_corpus(generate_corpus(1500, seed=40 + k, bad_fraction=0.02), str(inputs / f"f{k}.parquet"))
        pq.write_table(pq.read_table(inputs / f"f{k}.parquet"), inputs / f"f{k}.parquet", row_group_size=150)
    out = tmp_path / "out"
    date_dir = out / f"date={cs.DATE}"
    args = ["--model", str(artifact), "--input", str(inputs), "--output", str(out), "--date", cs.DATE,
            "--batch-size", "32"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVE_BATCH_FAULT", "RAY_ADDRESS"))}
    env.update({"RAY_TMPDIR": str(ray_tmp), "PYTHONPATH": str(cs.REPO)})
    proc = subprocess.Popen([sys.executable, "-m", "jobs.score_nightly", *args], env=env, cwd=str(cs.REPO),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    while time.time() - t0 < 240 and proc.poll() is None:
        if len(list((date_dir / "_commits").glob("*.json"))) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the job ended before it could be killed:\n" + proc.stdout.read()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    done_before = len(list((date_dir / "_commits").glob("*.json")))
    assert 3 <= done_before < 30 and not (date_dir / "_SUCCESS").exists()
    _let_core_settle(ray_tmp)
    res = cs.run_cli(args, {"RAY_TMPDIR": str(ray_tmp)}, module="jobs.score_nightly")
    assert res.returncode == 0, res.stderr[-2000:]
    summary = _check_exact(artifact, inputs, date_dir)
    assert summary["units"]["total"] == 30 and summary["units"]["scored_this_run"] == 30 - done_before


def test_bench_score_smoke(artifact, tmp_path, ray_tmp):
    out = tmp_path / "bench.json"
    res = cs.run_cli(["bench-score", "--model", str(artifact), "--rows", "1200", "--scale", "2", "--unit-rows", "300",
                      "--out", str(out), "--work-dir", str(tmp_path / "work")], {"RAY_TMPDIR": str(ray_tmp)}, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(out.read_text())
    for key in ("ceiling_docs_per_s", "pipeline_docs_per_s", "pipeline_over_ceiling", "int8_over_fp32",
                "int8_f1_delta", "rss_10x_over_1x"):
        assert isinstance(result[key], float) and result[key] == result[key], key
    assert result["pipeline_scaled"]["rows"] == 2 * result["pipeline"]["fp32"]["rows"] == 2400
    assert "pipeline fp32" in res.stderr and "ceiling int8" in res.stderr and "x ceiling" in res.stdout  # progress, then the table
