"""End to end, as users run it: a real 2-node local Ray cluster (`cluster/local.sh up`) and every
stage submitted with the real `ray job submit` CLI.

Flow (one cluster for the module, brought down in a ``finally``):

1. ``cluster/local.sh up --workers 1`` (head + 1 worker node, 1 CPU each: 2 CPUs in all, like
   the CI machine), on free ports, with its state dir and Ray temp dir private to this run; then
   the environment that ``eval "$(cluster/local.sh env)"`` gives a shell.
2. A tiny job checks that `python` inside a job is the venv's (the cluster runs from it).
3. ``python -m jobs.train`` on generated data (tiny model, 2 epochs, 2 DDP workers x 0.6 CPU,
   so one per node) -> SUCCEEDED; the artifact's manifest verifies; the Train workers ran on
   both nodes (Ray state API).
4. ``python -m jobs.score_nightly`` with the deterministic submission id
   ``score-nightly-YYYYMMDD`` -> SUCCEEDED; scored ids == the valid input ids, the summary's
   counts add up; the scoring actor pool had one actor (model loaded) on each node.
5. A second nightly submission with the same id is refused and changes nothing.
6. ``jobs.train`` on a missing file -> FAILED, with its one-line reason in ``ray job logs``.
7. ``cluster/local.sh down``; no process the cluster started is left.

Run: ``.venv/bin/python -m pytest -m e2e tests/e2e -q`` (about 3-4 minutes on a quiet 2-CPU machine).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import conftest_score as cs

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(1200)

LOCAL_SH = REPO / "cluster" / "local.sh"
VENV_BIN = Path(sys.executable).parent  # the cluster, the CLIs and the jobs all run from this venv
RAY = VENV_BIN / "ray"
DATE = "2026-11-21"
NIGHTLY_ID = f"score-nightly-{DATE.replace('-', '')}"  # one submission per date (cluster/k8s uses the same name)
TINY_MODEL = ["--set", "model.num_filters=16", "--set", "model.filter_widths=1,2,3,4", "--set", "model.embedding_dim=16",
              "--set", "model.hidden_dim=32",
              "--batch-size", "32", "--lr", "0.003", "--min-tag-freq", "5", "--max-epochs", "2",
              "--ensemble", "1"]
# Score only once the whole actor pool is up (Ray Data otherwise starts with the first actor ready).
NIGHTLY_ENV = {"RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "600"}
JOB_ENV = {"RAY_DATA_DISABLE_PROGRESS_BARS": "1", "PYTHONUNBUFFERED": "1", "TAGGING_DATA_NO_PROGRESS_TIMEOUT_S": "180"}


# ----------------------------------------------------------------------------- helpers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / "state"
        self.log = root / "commands.log"
        self.port, self.dash = _free_port(), _free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_API_SERVER", "RAY_AUTH"))}
        base.update({"PATH": f"{VENV_BIN}{os.pathsep}{base.get('PATH', '')}", "TAGGING_CLUSTER_DIR": str(self.state),
                     "RAY_BIN": str(RAY), **JOB_ENV})
        self.base_env = base
        self.env: dict[str, str] = dict(base)
        self.nodes: dict[str, dict] = {}  # node id -> `ray list nodes` entry, taken after `up`

    def run(self, args: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
        t0 = time.time()
        try:
            proc = subprocess.run(args, env=env or self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self._note(args, f"TIMEOUT after {timeout}s", str(exc.stdout or "") + str(exc.stderr or ""))
            raise
        self._note(args, f"rc={proc.returncode} in {time.time() - t0:.1f}s", proc.stdout + proc.stderr)
        return proc

    def _note(self, args, head: str, out: str) -> None:
        with self.log.open("a") as f:
            f.write(f"$ {' '.join(map(str, args))}\n# {head}\n{out}\n")

    def local_sh(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return self.run([str(LOCAL_SH), *args], timeout=timeout, env=self.base_env)

    def shell_env(self) -> dict[str, str]:
        """The environment after ``eval "$(cluster/local.sh env)"`` in a shell (done by a real bash)."""
        proc = subprocess.run(["bash", "-c", f'eval "$("{LOCAL_SH}" env)" && env -0'], env=self.base_env, cwd=REPO,
                              capture_output=True, text=True, timeout=60, check=True)
        return dict(item.split("=", 1) for item in proc.stdout.split("\0") if "=" in item)

    def ray(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return self.run([str(RAY), *args], timeout=timeout)

    def submit(self, submission_id: str, *entrypoint: str, env: dict | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
        """``ray job submit --working-dir . --submission-id ID -- ENTRYPOINT`` from the repo root; waits for the end."""
        runtime_env = {"env_vars": {**JOB_ENV, **(env or {})}}
        return self.ray("job", "submit", "--working-dir", ".", "--submission-id", submission_id,
                        "--runtime-env-json", json.dumps(runtime_env), "--", *entrypoint, timeout=timeout)

    def job(self, submission_id: str) -> dict:
        """The job's record from the Ray state API (`ray list jobs`): status, job_id, message, ..."""
        jobs = self.state_list("jobs", f"submission_id={submission_id}", detail=False)
        assert len(jobs) == 1, jobs
        return jobs[0]

    def logs(self, submission_id: str) -> str:
        return self.ray("job", "logs", submission_id).stdout

    def state_list(self, resource: str, *filters: str, detail: bool = True) -> list[dict]:
        args = ["list", resource, "--format", "json", "--limit", "10000"]
        for f in filters:
            args += ["--filter", f]
        proc = self.ray(*args, *(["--detail"] if detail else []))
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout)

    def alive_nodes(self) -> dict[str, dict]:
        return {n["node_id"]: n for n in self.state_list("nodes", "state=ALIVE")}

    def cluster_processes(self) -> set[tuple[int, str]]:
        """(pid, start time) of every live process of this cluster, found the way local.sh documents:
        the command line names the cluster's temp dir, or the session is one `up` started, plus all
        their descendants; and the PIDs `up` recorded in the state dir."""
        conf = dict(line.split("=", 1) for line in (self.state / "cluster.env").read_text().splitlines() if "=" in line)
        temp_dir = self.temp_dir = conf["TEMP_DIR"]
        sids = {int(s) for s in conf.get("SIDS", "").strip('"').split()}
        procs = {}
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] == "Z":
                continue
            procs[int(d.name)] = {"ppid": int(fields[1]), "sid": int(fields[3]), "start": fields[19], "cmd": cmd}
        mine = {p for p, i in procs.items() if temp_dir in i["cmd"] or i["sid"] in sids}
        changed = True
        while changed:
            new = {p for p, i in procs.items() if p not in mine and i["ppid"] in mine}
            mine |= new
            changed = bool(new)
        mine.discard(os.getpid())
        recorded = self.state / "pids"
        if recorded.exists():
            for line in recorded.read_text().splitlines():
                pid, start = line.split()[:2]
                if int(pid) in procs and procs[int(pid)]["start"] == start:
                    mine.add(int(pid))
        return {(p, procs[p]["start"]) for p in mine}


def _alive(pid: int, start: str) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[0] != "Z" and fields[19] == start


def _names(pid: int, text: str) -> bool:
    try:
        return text in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False


def _error_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith("error:")]


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if not RAY.exists():
        pytest.skip(f"no ray CLI next to {sys.executable}")
    c = Cluster(tmp_path_factory.mktemp("e2e-cluster"))
    try:
        up = c.local_sh("up", "--workers", "1", "--cpus-per-node", "1", "--port", str(c.port),
                        "--dashboard-port", str(c.dash), "--timeout", "240", timeout=420)
        assert up.returncode == 0, f"local.sh up failed:\n{up.stderr[-3000:]}"
        c.env = c.shell_env()
        assert c.env["RAY_ADDRESS"].endswith(f":{c.port}")
        assert c.env["RAY_API_SERVER_ADDRESS"] == f"http://127.0.0.1:{c.dash}"
        assert c.env["RAY_AUTH_MODE"] == "token" and Path(c.env["RAY_AUTH_TOKEN_PATH"]).is_file()
        c.nodes = c.alive_nodes()
        yield c
    finally:
        c.local_sh("down", "--grace", "20", timeout=300)  # a no-op when the last test already did it


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Training data and the nightly input (generated; 4 Parquet row groups = 4 scoring units; bad rows)."""
    root = tmp_path_factory.mktemp("e2e-data")
    train, raw = root / "train.parquet", root / "raw.parquet"
    incoming = root / "incoming" / f"dt={DATE}"
    incoming.mkdir(parents=True)
    for args in (["--rows", "1500", "--seed", "3", "--out", str(train)],
                 ["--rows", "4000", "--seed", "8", "--bad-fraction", "0.05", "--out", str(raw)]):
        subprocess.run([sys.executable, "-m", "tagging.cli", "synth", *args], cwd=REPO, check=True, capture_output=True,
                       timeout=300)
    table = pq.read_table(raw)
    pq.write_table(table, incoming / "part-0.parquet", row_group_size=table.num_rows // 4 + 1)
    return {"root": root, "train": train, "incoming": incoming}


@pytest.fixture(scope="module")
def trained(cluster, data):
    out = data["root"] / "model"
    proc = cluster.submit("e2e-train", "python", "-m", "jobs.train", "--data", str(data["train"]), "--out", str(out),
                          "--storage", str(data["root"] / "runs"), "--workers", "2", "--cpus-per-worker", "0.6",
                          *TINY_MODEL, timeout=900)
    return {"proc": proc, "model": out}


@pytest.fixture(scope="module")
def scored(cluster, data, trained):
    if trained["proc"].returncode != 0:
        pytest.skip("training failed (see test_train_job_succeeds_and_writes_a_verified_artifact)")
    output = data["root"] / "tags"
    proc = cluster.submit(NIGHTLY_ID, "python", "-m", "jobs.score_nightly", "--model", str(trained["model"]),
                          "--input", str(data["incoming"]), "--output", str(output), "--date", DATE,
                          "--actors", "2", "--cpus-per-actor", "0.75", env=NIGHTLY_ENV, timeout=600)
    return {"proc": proc, "output": output, "date_dir": output / f"date={DATE}"}


# ----------------------------------------------------------------------------- tests


def test_cluster_has_two_nodes_and_jobs_use_the_venv_python(cluster):
    nodes = cluster.nodes
    assert len(nodes) == 2 and sum(bool(n["is_head_node"]) for n in nodes.values()) == 1, nodes
    assert sum(float(n["resources_total"].get("CPU", 0)) for n in nodes.values()) == 2.0
    proc = cluster.submit("e2e-python", "python", "-c", "import sys; print('PREFIX', sys.prefix)",
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    m = re.search(r"^PREFIX (\S+)$", proc.stdout, re.M)
    assert m, proc.stdout[-3000:]
    assert Path(m.group(1)).resolve() == Path(sys.prefix).resolve()


def test_train_job_succeeds_and_writes_a_verified_artifact(cluster, trained):
    proc = trained["proc"]
    assert proc.returncode == 0, f"train job failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    assert cluster.job("e2e-train")["status"] == "SUCCEEDED"
    from tagging.artifact import load_artifact

    art = load_artifact(trained["model"])  # checks every file against the manifest's sha256
    manifest = art.manifest
    assert {"model.onnx", "model.pt", "labels.json", "vocab.json", "thresholds.json", "rejects.parquet"} <= set(manifest["files"])
    assert manifest["config"]["workers"] == 2 and manifest["config"]["cpus_per_worker"] == 0.6
    assert manifest["run"]["epochs"] == 2 and manifest["onnx"]["parity_max_abs_diff"] <= 1e-5
    assert manifest["data"]["rows_read"] == 1500
    assert manifest["versions"]["ray"] == "2.60.0"
    # Actors reach the State API through RAY_ADDRESS (set by local.sh on every node), not by
    # scanning the host for a gcs_server: other Rays on a shared host must not break Train.
    assert "Found multiple active Ray instances" not in proc.stdout
    last = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith('{"artifact"')][-1])
    assert last["artifact"] == str(trained["model"])


def test_train_workers_ran_on_both_nodes(cluster, trained):
    assert trained["proc"].returncode == 0
    nodes = cluster.nodes
    workers = cluster.state_list("actors", f"job_id={cluster.job('e2e-train')['job_id']}", "class_name=RayTrainWorker")
    assert len(workers) >= 2, workers
    # 0.6 CPU per worker on 1-CPU nodes: the two DDP workers cannot share a node.
    assert {w["node_id"] for w in workers} == set(nodes)


def test_nightly_scoring_succeeds_and_accounts_for_every_row(cluster, data, trained, scored):
    proc = scored["proc"]
    assert proc.returncode == 0, f"scoring job failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    assert cluster.job(NIGHTLY_ID)["status"] == "SUCCEEDED"
    date_dir = scored["date_dir"]
    assert (date_dir / "_SUCCESS").is_file()
    summary = json.loads((date_dir / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["date"] == DATE

    from tagging.artifact import load_artifact

    art = load_artifact(trained["model"])
    expected = cs.expected_outcome([str(data["incoming"])], art.config.data)
    scored_rows, rejects = cs.read_output(date_dir)
    ids = scored_rows.column("id").to_pylist()
    assert len(ids) == len(set(ids)) and set(ids) == set(expected["valid"])
    assert summary["rows_read"] == expected["records"] == 4000
    assert summary["rows_scored"] + summary["rows_rejected"] == summary["rows_read"]
    assert summary["rows_scored"] == scored_rows.num_rows and summary["rows_rejected"] == rejects.num_rows > 0
    assert sum(summary["rejects_by_reason"].values()) == summary["rows_rejected"]
    assert summary["rejects_by_reason"] == dict(sorted(expected["reasons"].items()))
    assert summary["units"]["total"] == 4 and summary["model"]["sha"] == art.sha
    assert summary["throughput_docs_per_s"] > 0
    # The job's own last stdout line is the run's JSON summary.
    line = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith('{"status"')][-1])
    assert line["status"] == "complete" and line["rows_scored"] == summary["rows_scored"]


def test_scoring_actors_ran_on_both_nodes(cluster, scored):
    assert scored["proc"].returncode == 0
    nodes = cluster.nodes
    job_id = cluster.job(NIGHTLY_ID)["job_id"]
    # 2 actors x 0.75 CPU on 1-CPU nodes: one per node, and with RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S
    # the pool starts scoring only once both are up (each loaded the model on its node).
    actors = [a for a in cluster.state_list("actors", f"job_id={job_id}") if "ScoreStage" in a["class_name"]]
    assert len(actors) == 2, actors
    assert {a["node_id"] for a in actors} == set(nodes), actors
    # Which node scored how many batches (informational: the pool hands work to the least busy actor).
    tasks = cluster.state_list("tasks", f"job_id={job_id}", "state=FINISHED")
    per_node = Counter(t["node_id"] for t in tasks if t["name"].endswith("ScoreStage)).submit"))
    print(f"scoring batches per node: {dict(per_node)}")
    assert sum(per_node.values()) >= 4  # one batch per unit at least


def test_second_nightly_submission_for_the_same_date_is_refused(cluster, data, scored):
    assert scored["proc"].returncode == 0
    before = {p: p.stat().st_mtime_ns for p in scored["date_dir"].rglob("*")}
    proc = cluster.submit(NIGHTLY_ID, "python", "-m", "jobs.score_nightly", "--model", "/nonexistent",
                          "--input", str(data["incoming"]), "--output", str(scored["output"]), "--date", DATE,
                          timeout=300)
    assert proc.returncode != 0
    assert f"Job with submission_id {NIGHTLY_ID} already exists" in proc.stdout + proc.stderr, proc.stderr[-2000:]
    assert cluster.job(NIGHTLY_ID)["status"] == "SUCCEEDED"  # one job with that id: the first run, untouched
    assert {p: p.stat().st_mtime_ns for p in scored["date_dir"].rglob("*")} == before


def test_failing_job_is_failed_with_a_one_line_reason(cluster, data):
    missing = data["root"] / "no-such-file.parquet"
    proc = cluster.submit("e2e-train-missing-input", "python", "-m", "jobs.train", "--data", str(missing),
                          "--out", str(data["root"] / "never"), "--storage", str(data["root"] / "runs"), *TINY_MODEL,
                          timeout=300)
    assert proc.returncode == 1  # `ray job submit` exits 1 when the job it follows fails
    job = cluster.job("e2e-train-missing-input")
    assert job["status"] == "FAILED" and "exit code 1" in job["message"], job
    logs = cluster.logs("e2e-train-missing-input")
    errors = _error_lines(logs)
    assert len(errors) == 1 and str(missing) in errors[0], logs[-3000:]
    assert "Traceback" not in logs
    assert not (data["root"] / "never").exists()


def test_down_stops_every_process_the_cluster_started(cluster):
    procs = cluster.cluster_processes()
    assert len(procs) >= 8, procs  # gcs, 2 raylets, dashboard, agents, log monitors, ...
    down = cluster.local_sh("down", "--grace", "20", timeout=300)
    assert down.returncode == 0, down.stderr[-3000:]
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(p, s) for p, s in procs):
        time.sleep(0.5)
    assert not [p for p, s in procs if _alive(p, s)], "processes left after down"
    named = [d.name for d in Path("/proc").iterdir() if d.name.isdigit() and _names(int(d.name), cluster.temp_dir)]
    assert not named, f"processes still naming {cluster.temp_dir}: {named}"
    assert not Path(cluster.temp_dir).exists()
    assert not _port_open(cluster.port) and not _port_open(cluster.dash)
    assert not (cluster.state / "cluster.env").exists()
    status = cluster.local_sh("status", timeout=60)
    assert status.returncode != 0
