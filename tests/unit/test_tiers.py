"""The tiers themselves: every test carries the marker of its directory; the unit tier refuses Ray and training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TIERS = {"unit", "integration", "e2e", "model"}
UNIT = Path(__file__).resolve().parent


def test_every_collected_test_has_its_directorys_tier(request):
    tests = UNIT.parent
    for item in request.session.items:
        tier = Path(item.fspath).resolve().relative_to(tests).parts[0]
        assert {m.name for m in item.iter_markers()} & TIERS == {tier}, item.nodeid


def test_a_unit_test_that_starts_ray_or_wants_a_trained_model_fails(tmp_path):
    """The unit conftest's guards, on a test that 'starts' a stand-in Ray (no real Ray here) and one asking for training."""
    (tmp_path / "conftest.py").write_text((UNIT / "conftest.py").read_text())
    (tmp_path / "test_starts_ray.py").write_text(
        "import sys\n"
        "class FakeRay:\n"
        "    started = False\n"
        "    def is_initialized(self): return self.started\n"
        "    def shutdown(self): self.started = False\n"
        "sys.modules['ray'] = FakeRay()\n"
        "def test_leaves_ray_started():\n"
        "    sys.modules['ray'].started = True\n"
        "def test_after_it_ray_is_stopped():\n"
        "    assert not sys.modules['ray'].is_initialized()\n"
        "def test_wants_a_trained_model(local_artifact):\n"
        "    pass\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "2 passed, 2 errors" in out, out
    assert "ERROR at teardown of test_leaves_ray_started" in out and "a unit test started Ray: move it to tests/integration" in out, out
    assert "ERROR at setup of test_wants_a_trained_model" in out and "a unit test asked for the trained artifact" in out, out
