"""Static checks of the cluster configs in cluster/ (no Ray, no cloud, no Kubernetes).

Every version these configs install or run is compared with the `==` pins of
pyproject.toml, read at test time: bumping a pin there without updating
cluster/ (or the reverse) fails here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
K8S = CLUSTER / "k8s"
LAUNCHER_CONFIGS = {"aws": CLUSTER / "aws.yaml", "gcp": CLUSTER / "gcp.yaml"}
BASH = shutil.which("bash")


# --------------------------------------------------------------------------- helpers


def _pyproject_requirements() -> dict[str, Requirement]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = [Requirement(r) for r in data["project"]["dependencies"]]
    return {canonicalize_name(r.name): r for r in reqs}


PYPROJECT = _pyproject_requirements()


def _exact_version(req: Requirement) -> str | None:
    specs = list(req.specifier)
    if len(specs) == 1 and specs[0].operator == "==":
        return specs[0].version
    return None


PINS = {name: v for name, req in PYPROJECT.items() if (v := _exact_version(req))}
RAY = "ray"


def test_pyproject_pins_ray_and_torch():
    # The checks below are only meaningful if these are pinned at all.
    assert RAY in PINS and "torch" in PINS, PINS


RAY_VERSION = PINS.get(RAY, "<unpinned>")

# name[extras] OP version, as written in shell commands (quoted or not).
_SPEC_RE = re.compile(
    r"(?<![\w.\-/])([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]\s]*\])?\s*(===|==|>=|<=|~=|!=)\s*([0-9][^\s\"',;)]*)"
)


def _specs_in_commands(commands) -> list[tuple[str, set[str], str, str]]:
    """(canonical name, extras, operator, version) for every requirement-looking token."""
    found = []
    for cmd in commands:
        for name, extras, op, version in _SPEC_RE.findall(cmd):
            extra_set = {e.strip() for e in extras.strip("[]").split(",") if e.strip()}
            found.append((canonicalize_name(name), extra_set, op, version))
    return found


def _load(path: Path):
    return yaml.safe_load(path.read_text())


def _load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _check_pip_list_matches_pyproject(packages: list[str], where: str):
    """A runtime-env pip list must be pyproject's dependencies minus ray, same specifiers."""
    got = {}
    for line in packages:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name not in got, f"{where}: {name} listed twice"
        got[name] = req
    assert RAY not in got, f"{where}: ray must come from the cluster (image/launcher), not the job's pip list"
    want = {n: r for n, r in PYPROJECT.items() if n != RAY}
    assert set(got) == set(want), (
        f"{where}: packages differ from pyproject.toml: "
        f"missing {sorted(set(want) - set(got))}, extra {sorted(set(got) - set(want))}"
    )
    for name, req in want.items():
        assert got[name].specifier == req.specifier, (
            f"{where}: {name}{got[name].specifier} != pyproject.toml {name}{req.specifier}"
        )


def _containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def _check_image(image: str, where: str, gpu: bool):
    repo, _, tag = image.rpartition(":")
    assert repo == "rayproject/ray", f"{where}: unexpected image {image}"
    assert tag.startswith(RAY_VERSION + "-") or tag == RAY_VERSION, (
        f"{where}: image {image} is not Ray {RAY_VERSION} (pyproject.toml pin)"
    )
    if gpu:
        assert tag.endswith("-gpu") or "-cu" in tag, f"{where}: GPU group needs a GPU image, got {image}"
    else:
        assert "gpu" not in tag and "-cu" not in tag, f"{where}: CPU group uses GPU image {image}"


def _gpu_count(container: dict, kind: str) -> int:
    return int(str(container.get("resources", {}).get(kind, {}).get("nvidia.com/gpu", 0)))


def _check_ray_cluster_spec(spec: dict, where: str, *, need_gpu_group: bool, need_cpu_group: bool):
    assert str(spec["rayVersion"]) == RAY_VERSION, (
        f"{where}: rayVersion {spec['rayVersion']!r} != pyproject.toml ray=={RAY_VERSION}"
    )
    head = spec["headGroupSpec"]
    assert isinstance(head.get("rayStartParams"), dict), f"{where}: headGroupSpec.rayStartParams"
    for value in head["rayStartParams"].values():
        assert isinstance(value, str), f"{where}: rayStartParams values must be strings, got {value!r}"
    for c in _containers(head["template"]):
        _check_image(c["image"], f"{where} head", gpu=False)

    groups = spec.get("workerGroupSpecs") or []
    assert groups, f"{where}: no workerGroupSpecs"
    names = [g["groupName"] for g in groups]
    assert len(set(names)) == len(names), f"{where}: duplicate groupName in {names}"
    gpu_groups, cpu_groups = [], []
    for g in groups:
        gw = f"{where} group {g['groupName']}"
        lo, hi = g.get("minReplicas", 0), g.get("maxReplicas")
        assert hi is not None and hi >= 1, f"{gw}: maxReplicas"
        assert 0 <= lo <= hi, f"{gw}: minReplicas {lo} > maxReplicas {hi}"
        assert lo <= g.get("replicas", lo) <= hi, f"{gw}: replicas outside [min, max]"
        assert isinstance(g.get("rayStartParams"), dict), f"{gw}: rayStartParams"
        containers = _containers(g["template"])
        gpus = max(_gpu_count(c, "requests") for c in containers)
        limits = max(_gpu_count(c, "limits") for c in containers)
        assert gpus == limits, f"{gw}: nvidia.com/gpu requests ({gpus}) != limits ({limits})"
        for c in containers:
            _check_image(c["image"], gw, gpu=gpus > 0)
            res = c.get("resources", {})
            assert "cpu" in res.get("requests", {}) and "memory" in res.get("requests", {}), (
                f"{gw}: cpu/memory requests"
            )
        (gpu_groups if gpus > 0 else cpu_groups).append(g["groupName"])
    if need_gpu_group:
        assert gpu_groups, f"{where}: no worker group requests nvidia.com/gpu"
    if need_cpu_group:
        assert cpu_groups, f"{where}: no CPU-only worker group"
    if spec.get("authOptions") is not None:
        assert spec["authOptions"].get("mode") in {"token", "disabled"}, f"{where}: authOptions.mode"
    return gpu_groups, cpu_groups


# --------------------------------------------------------------------------- cluster launcher


@pytest.fixture(params=sorted(LAUNCHER_CONFIGS), ids=sorted(LAUNCHER_CONFIGS))
def launcher(request):
    return request.param, _load(LAUNCHER_CONFIGS[request.param])


def _effective_setup(cfg: dict, node_type: str) -> list[str]:
    """Setup commands Ray runs on a node of this type (node-type lists replace the merged global ones)."""
    if node_type == cfg["head_node_type"]:
        return list(cfg.get("setup_commands") or []) + list(cfg.get("head_setup_commands") or [])
    own = cfg["available_node_types"][node_type].get("worker_setup_commands")
    if own is not None:
        return list(own)
    return list(cfg.get("setup_commands") or []) + list(cfg.get("worker_setup_commands") or [])


def _all_commands(cfg: dict) -> list[str]:
    cmds = []
    for key in ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands"):
        cmds += list(cfg.get(key) or [])
    for nt in cfg["available_node_types"].values():
        cmds += list(nt.get("worker_setup_commands") or []) + list(nt.get("initialization_commands") or [])
    return cmds


def test_launcher_required_fields(launcher):
    provider_name, cfg = launcher
    assert isinstance(cfg.get("cluster_name"), str) and cfg["cluster_name"]
    assert cfg["provider"]["type"] == provider_name
    assert cfg["provider"].get("region")
    assert cfg["auth"]["ssh_user"]
    assert isinstance(cfg.get("max_workers"), int) and cfg["max_workers"] >= 1
    types = cfg["available_node_types"]
    assert isinstance(types, dict) and types
    assert cfg["head_node_type"] in types, f"head_node_type {cfg['head_node_type']!r} not in {sorted(types)}"
    for name, nt in types.items():
        assert isinstance(nt.get("node_config"), dict) and nt["node_config"], f"{name}: node_config"
        assert isinstance(nt.get("resources"), dict), f"{name}: resources"
        for k, v in nt["resources"].items():
            assert isinstance(v, int) and v >= 0, f"{name}: resource {k}={v!r} must be a non-negative int"
    assert isinstance(cfg.get("file_mounts"), dict)
    assert cfg.get("head_start_ray_commands") and cfg.get("worker_start_ray_commands")


def test_launcher_node_groups_and_bounds(launcher):
    _, cfg = launcher
    types = cfg["available_node_types"]
    head = cfg["head_node_type"]
    head_res = types[head]["resources"]
    assert "CPU" in head_res, "CPU head: declare its CPU resource (0 keeps tasks off it)"
    assert head_res.get("GPU", 0) == 0, "the head is a CPU node"

    workers = {n: t for n, t in types.items() if n != head}
    gpu = [n for n, t in workers.items() if t["resources"].get("GPU", 0) >= 1]
    cpu = [n for n, t in workers.items() if t["resources"].get("GPU", 0) == 0 and t["resources"].get("CPU", 0) > 0]
    assert gpu, "no GPU worker group (resources GPU >= 1) for training"
    assert cpu, "no CPU worker group for scoring"
    total_min = 0
    for name, t in workers.items():
        lo, hi = t.get("min_workers", 0), t.get("max_workers", cfg["max_workers"])
        assert 0 <= lo <= hi, f"{name}: min_workers {lo} > max_workers {hi}"
        assert hi <= cfg["max_workers"], f"{name}: max_workers {hi} > cluster max_workers {cfg['max_workers']}"
        total_min += lo
    assert total_min <= cfg["max_workers"]


def test_launcher_setup_pins_match_pyproject(launcher):
    _, cfg = launcher
    specs = _specs_in_commands(_all_commands(cfg))
    for name, version in PINS.items():
        seen = [s for s in specs if s[0] == name]
        assert seen, f"setup commands never install {name}=={version} (pyproject.toml pin)"
        for _, extras, op, v in seen:
            assert (op, v) == ("==", version), f"setup commands install {name}{op}{v}, pyproject.toml pins =={version}"
    ray_extras = set().union(*(s[1] for s in specs if s[0] == RAY))
    assert set(PYPROJECT[RAY].extras) <= ray_extras, (
        f"ray extras {sorted(ray_extras)} lack pyproject's {sorted(PYPROJECT[RAY].extras)}"
    )
    # Every node type installs Ray and torch at the pinned versions (node-type
    # worker_setup_commands replace the global lists, so check each node's own).
    for node_type in cfg["available_node_types"]:
        node_specs = {(s[0], s[2], s[3]) for s in _specs_in_commands(_effective_setup(cfg, node_type))}
        for name in (RAY, "torch"):
            assert (name, "==", PINS[name]) in node_specs, f"{node_type}: does not install {name}=={PINS[name]}"


def test_launcher_start_commands_and_auth(launcher):
    _, cfg = launcher
    head = " ".join(cfg["head_start_ray_commands"])
    worker = " ".join(cfg["worker_start_ray_commands"])
    assert "ray start --head" in head
    assert "--address=$RAY_HEAD_IP:" in worker
    # Ray >= 2.59: every process must agree on RAY_AUTH_MODE.
    modes = {m for cmd in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
             for m in re.findall(r"RAY_AUTH_MODE=(\w+)", cmd)}
    starts = [c for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"] if "ray start" in c]
    if modes:
        assert len(modes) == 1, f"inconsistent RAY_AUTH_MODE: {modes}"
        assert all("RAY_AUTH_MODE=" in c for c in starts), "RAY_AUTH_MODE missing from a `ray start`"
    if modes == {"token"}:
        assert any("auth_token" in str(k) for k in cfg["file_mounts"]), "token mode needs the token on every node"


@pytest.mark.skipif(BASH is None, reason="bash not available")
def test_launcher_commands_are_valid_bash(launcher):
    _, cfg = launcher
    for cmd in _all_commands(cfg):
        r = subprocess.run([BASH, "-n", "-c", cmd], capture_output=True, text=True)
        assert r.returncode == 0, f"bash -n failed for {cmd!r}: {r.stderr}"


def test_launcher_matches_installed_ray_schema(launcher):
    """Validate against the schema shipped in the installed ray package, without importing ray."""
    import importlib.util
    import json

    jsonschema = pytest.importorskip("jsonschema")
    spec = importlib.util.find_spec("ray")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("ray not installed")
    schema_path = Path(list(spec.submodule_search_locations)[0]) / "autoscaler" / "ray-schema.json"
    if not schema_path.is_file():
        pytest.skip("ray-schema.json not found")
    _, cfg = launcher
    jsonschema.validate(cfg, json.loads(schema_path.read_text()))


# --------------------------------------------------------------------------- KubeRay


def test_raycluster():
    doc = _load(K8S / "raycluster.yaml")
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["kind"] == "RayCluster"
    assert doc["metadata"]["name"]
    spec = doc["spec"]
    assert spec.get("enableInTreeAutoscaling") is True
    gpu, cpu = _check_ray_cluster_spec(spec, "raycluster.yaml", need_gpu_group=True, need_cpu_group=True)
    assert any("gpu" in g for g in gpu) and any("scor" in g for g in cpu), (gpu, cpu)
    for g in spec["workerGroupSpecs"]:
        assert g["maxReplicas"] > g.get("minReplicas", 0), f"{g['groupName']}: no room to autoscale"


def test_rayjob_train():
    doc = _load(K8S / "rayjob-train.yaml")
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["kind"] == "RayJob"
    spec = doc["spec"]
    entry = spec["entrypoint"]
    assert entry.startswith("python -m jobs.train")
    assert "--data" in entry and "--out" in entry
    assert spec["shutdownAfterJobFinishes"] is True
    env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert env.get("working_dir")
    _check_pip_list_matches_pyproject(env["pip"]["packages"], "rayjob-train.yaml runtimeEnvYAML")
    _check_ray_cluster_spec(spec["rayClusterSpec"], "rayjob-train.yaml", need_gpu_group=True, need_cpu_group=False)


@pytest.fixture(scope="module")
def cron_docs():
    docs = _load_all(K8S / "cronjob-score-nightly.yaml")
    by_kind = {}
    for d in docs:
        assert d["kind"] not in by_kind, f"two {d['kind']} documents"
        by_kind[d["kind"]] = d
    return by_kind


_CRON_FIELD = r"(\*|\d+(-\d+)?)(/\d+)?(,(\d+(-\d+)?)(/\d+)?)*"


def test_cronjob_schedule_and_policy(cron_docs):
    cj = cron_docs["CronJob"]
    assert cj["apiVersion"] == "batch/v1"
    spec = cj["spec"]
    fields = spec["schedule"].split()
    assert len(fields) == 5 and all(re.fullmatch(_CRON_FIELD, f) for f in fields), spec["schedule"]
    assert fields[2:] == ["*", "*", "*"], "expected a daily schedule"
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in {"Never", "OnFailure"}
    script = "\n".join(pod["containers"][0].get("command", []) + pod["containers"][0].get("args", []))
    assert "kubectl create" in script, "must create (refuses an existing name), not apply"
    assert "kubectl apply" not in script and "kubectl replace" not in script
    if BASH:
        body = pod["containers"][0]["args"][0]
        r = subprocess.run([BASH, "-n", "-c", body], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_cronjob_rbac(cron_docs):
    sa = cron_docs["ServiceAccount"]["metadata"]["name"]
    pod = cron_docs["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa
    role = cron_docs["Role"]
    rules = [r for r in role["rules"] if "ray.io" in r["apiGroups"] and "rayjobs" in r["resources"]]
    assert rules and {"create", "get"} <= set(rules[0]["verbs"])
    rb = cron_docs["RoleBinding"]
    assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert {"kind": "ServiceAccount", "name": sa} in [{k: s[k] for k in ("kind", "name")} for s in rb["subjects"]]


def test_cronjob_rayjob_template(cron_docs):
    cm = cron_docs["ConfigMap"]
    pod = cron_docs["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert cm["metadata"]["name"] in [v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v]
    (template_text,) = cm["data"].values()
    rj = yaml.safe_load(template_text)
    assert rj["apiVersion"] == "ray.io/v1" and rj["kind"] == "RayJob"
    assert "__NAME__" in rj["metadata"]["name"], "the RayJob name must come from the date"
    script = pod["containers"][0]["args"][0]
    assert "__NAME__" in script and "__DAY__" in script
    spec = rj["spec"]
    entry = spec["entrypoint"]
    assert entry.startswith("python -m jobs.score_nightly")
    for flag in ("--model", "--input", "--output"):
        assert flag in entry
    assert "__DAY__" in entry, "input/output must be per date"
    assert spec["shutdownAfterJobFinishes"] is True
    env = yaml.safe_load(spec["runtimeEnvYAML"])
    _check_pip_list_matches_pyproject(env["pip"]["packages"], "score-nightly RayJob runtimeEnvYAML")
    _check_ray_cluster_spec(spec["rayClusterSpec"], "score-nightly RayJob", need_gpu_group=False, need_cpu_group=True)


# --------------------------------------------------------------------------- runtime env, .rayignore


def test_runtime_env_matches_pyproject():
    env = _load(CLUSTER / "runtime_env.yaml")
    assert env["working_dir"] == "."
    pip = env["pip"]
    packages = pip["packages"] if isinstance(pip, dict) else pip
    _check_pip_list_matches_pyproject(packages, "cluster/runtime_env.yaml")
    assert env["env_vars"]["RAY_DATA_DISABLE_PROGRESS_BARS"] == "1"
    assert all(isinstance(v, str) for v in env["env_vars"].values()), "runtime_env env_vars must be strings"


def test_rayignore_keeps_uploads_small():
    lines = {ln.strip() for ln in (ROOT / ".rayignore").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")}
    for pattern in (".venv", ".git", "__pycache__", ".pytest_cache", "*.parquet"):
        assert pattern in lines or pattern + "/" in lines, f".rayignore lacks {pattern}"
    for out_dir in ("runs", "artifacts"):
        assert {out_dir, "/" + out_dir, out_dir + "/", "/" + out_dir + "/"} & lines, f".rayignore lacks {out_dir}"


# --------------------------------------------------------------------------- cluster/local.sh

LOCAL_SH = CLUSTER / "local.sh"
needs_bash = pytest.mark.skipif(BASH is None, reason="bash not available")


def _run_local(*args, state_dir: Path, **env):
    full_env = {**os.environ, "TAGGING_CLUSTER_DIR": str(state_dir), **env}
    return subprocess.run([BASH, str(LOCAL_SH), *args], capture_output=True, text=True, env=full_env, timeout=60)


@needs_bash
def test_local_sh_syntax():
    r = subprocess.run([BASH, "-n", str(LOCAL_SH)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "set -euo pipefail" in LOCAL_SH.read_text()


@needs_bash
def test_local_sh_help(tmp_path):
    r = _run_local("--help", state_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout.lower()
    assert "usage" in out
    for word in ("up", "env", "status", "down", "--workers", "--cpus-per-node", "--object-store-mb", "--port",
                 "--dashboard-port"):
        assert word in out, f"--help does not mention {word}"


def test_local_sh_never_runs_ray_stop():
    """`ray stop` kills every Ray on the host (other sessions', tests'): local.sh must not call it."""
    for n, line in enumerate(LOCAL_SH.read_text().splitlines(), 1):
        code = line.split("#", 1)[0] if not line.lstrip().startswith("#") else ""
        assert not re.search(r"""(\bray|\$\{?RAY\}?"?)\s+stop\b""", code), f"local.sh:{n} runs ray stop: {line}"
        assert not re.search(r"\b(pkill|killall)\b", code), f"local.sh:{n} kills by name: {line}"


@needs_bash
def test_local_sh_without_cluster(tmp_path):
    assert _run_local("status", state_dir=tmp_path).returncode != 0
    assert _run_local("env", state_dir=tmp_path).returncode != 0
    assert _run_local("down", state_dir=tmp_path).returncode == 0  # nothing to stop is fine
    r = _run_local("bogus", state_dir=tmp_path)
    assert r.returncode != 0


@needs_bash
def test_local_sh_env_exports(tmp_path):
    (tmp_path / "cluster.env").write_text(
        "GCS_PORT=7123\nDASH_PORT=8123\nCLIENT_PORT=1\nAUTH_MODE=token\nTEMP_DIR=/nonexistent/tagray-test\n"
        "NODE_IP=127.0.0.2\nWORKERS=1\n"
    )
    r = _run_local("env", state_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "export RAY_ADDRESS=127.0.0.2:7123" in lines
    assert "export RAY_API_SERVER_ADDRESS=http://127.0.0.1:8123" in lines
    assert "export RAY_AUTH_MODE=token" in lines
    assert f"export RAY_AUTH_TOKEN_PATH={tmp_path}/auth_token" in lines
    # The state says the cluster exists but none of its processes runs.
    assert _run_local("status", state_dir=tmp_path).returncode != 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
