"""The committed notebooks replay under strict nbval and rewrite their result files byte for byte.

A copy of the repository (code, notebooks, data/, figures/) executes every notebook on the `mini`
preset with `pytest --nbval`: every output is compared with the committed one, up to the rules
of `notebooks/nbval_sanitize.cfg`. With the committed base and units nothing is trained, so this
takes one to five minutes on 2 CPU cores. Working in a copy leaves this checkout untouched (a
run rewrites the `*_run.json` files, which record the machine and the commit); the copy's result
files are then compared, byte for byte, with this checkout's.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from gift_lite.repro import repo_root

ROOT = repo_root()
COPIED = ("pyproject.toml", "gift_lite", "notebooks", "data", "figures")
SANITIZE = "notebooks/nbval_sanitize.cfg"
TIMEOUT_S = 1200  # a generous bound for a loaded 2-core machine; a replay takes 1-5 minutes
# Rewritten on every run whatever is cached: the theory (notebook 01) and the claims (03, 05, 11, 12).
REGENERATED = (
    "data/theory/theory_beta_sweep.csv", "data/theory/theory_pg_dynamics.csv", "data/theory/theory_tree_beta.csv",
    "data/theory/theory_tree_paths.csv", "data/theory/theory_tree_summary.csv",
    "data/mini/claims.csv", "data/mini/beta_curve.csv", "data/mini_rl200/claims.csv", "data/mini_ft/claims.csv",
    "data/mini_ft/claims_rechecked.csv", "data/mini_ft/claims_stability.csv", "data/mini_conf/claims.csv",
    "data/mini_conf/reported.csv", "data/mini_conf/claims_intervals.csv", "data/mini_conf/ood_transfer.csv",
    "data/mini_conf/placebo.csv", "data/mini_conf/beta_curve_shared_seeds.csv",
)


# Notebooks whose `mini` run is still being computed, unit by unit, across sessions: committed
# without outputs, so a replay would train for hours; they are left out of it until the run is done.
IN_PROGRESS: set[str] = set()  # none now: the confirmatory protocol's units (notebook 05) are complete


def unexecuted_notebooks(root) -> list[str]:
    """Notebooks committed without outputs (a replay would compare nothing in them)."""
    left_out = []
    for path in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        if not any(c.get("outputs") for c in cells if c["cell_type"] == "code"):
            left_out.append(path.relative_to(root).as_posix())
    return left_out


def result_files(root) -> list[str]:
    """Every file under data/ and figures/ but the run JSONs and what git ignores (weights, Trainer
    checkpoints of a run in progress), as paths relative to ``root``."""
    found = sorted(p.relative_to(root).as_posix() for folder in ("data", "figures") for p in (root / folder).rglob("*")
                   if p.is_file() and not p.name.endswith("_run.json"))
    ignored = subprocess.run(["git", "check-ignore", "--stdin"], cwd=ROOT, input="\n".join(found),
                             capture_output=True, text=True)  # exit 1: none ignored; 128: not a checkout
    return [f for f in found if f not in set(ignored.stdout.split())] if ignored.returncode == 0 else found


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    """``(copy, completed pytest --nbval process, start time)``."""
    copy = tmp_path_factory.mktemp("replica")
    skip = shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints")
    for name in COPIED:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, copy / name, ignore=skip)
        else:
            shutil.copy2(ROOT / name, copy / name)
    # The copy's own gift_lite (PYTHONPATH comes before the editable install), so repo_root() and
    # every path the notebooks write to lie inside the copy; the kernel inherits the variable.
    env = {**os.environ, "GIFT_PRESET": "mini", "PYTHONPATH": str(copy)}
    start = time.time()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval",
                           "--nbval-current-env", "--nbval-sanitize-with", SANITIZE, "notebooks/"]
                          + [f"--ignore={name}" for name in unexecuted_notebooks(copy)],
                          cwd=copy, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    return copy, proc, start


def test_every_committed_notebook_passes_strict_nbval(replay):
    _, proc, _ = replay
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-2000:]


def test_theory_and_claims_files_are_regenerated_with_the_committed_bytes(replay):
    copy, _, start = replay
    for name in REGENERATED:
        assert (copy / name).stat().st_mtime >= start, f"{name} was not rewritten by the replay"
        assert (copy / name).read_bytes() == (ROOT / name).read_bytes(), f"{name} differs from the committed file"
    assert (ROOT / "data/theory/theory_pg_dynamics_run.json").stat().st_mtime < start  # this checkout untouched


def test_every_result_file_keeps_its_bytes(replay):
    copy, _, _ = replay
    assert result_files(copy) == result_files(ROOT)  # no notebook wrote a result file that is not committed
    differ = [name for name in result_files(ROOT) if (copy / name).read_bytes() != (ROOT / name).read_bytes()]
    assert not differ, f"replaying the notebooks changed {differ}"


def test_only_a_notebook_whose_run_is_in_progress_is_committed_without_outputs():
    assert set(unexecuted_notebooks(ROOT)) <= IN_PROGRESS
