"""Real-model units (CPU stand-in): resuming from the last Trainer checkpoint after a SIGKILL,
and one run folder never mixing units of different settings.

A unit of notebook 06 (the initialiser, GRPO) can run for hours on a GPU, so it checkpoints every
``save_steps`` optimizer steps; a rerun resumes there and must end with the numbers of a run that
was never interrupted.
"""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from gift_lite import real_settings, units
from gift_lite.units import check_unit_settings

SCRIPT = """
import os, signal, sys
from dataclasses import replace
from pathlib import Path
import torch
from transformers import Trainer
from gift_lite import real, real_data, real_settings, units

stage, data_dir, kill_step = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
save = Trainer._save_checkpoint

def save_then_die(self, model, trial):  # SIGKILL right after checkpoint kill_step of this stage is saved
    save(self, model, trial)
    if self.state.global_step == kill_step and f"/checkpoints/{stage}/" in self.args.output_dir:
        os.kill(os.getpid(), signal.SIGKILL)

Trainer._save_checkpoint = save_then_die
torch.set_num_threads(1)
settings = replace(real_settings.SMOKE_REAL, save_steps=1, init=replace(real_settings.SMOKE_REAL.init, max_steps=6),
                   rl=replace(real_settings.SMOKE_REAL.rl, max_steps=4))
data = real_data.load_data(settings)
model_path = real_data.resolve_model(settings, data_dir)
real.run_init_unit(settings, model_path, data, data_dir, 0)
if stage == "rl":
    real.run_rl_unit(settings, model_path, data, data_dir, 0)
"""
KEY = "gift_beta20_seed0"


def run(stage: str, data_dir: Path, kill_step: int = 0) -> int:
    """Run the unit(s) in a child process, killed (SIGKILL) after checkpoint ``kill_step`` of ``stage``."""
    proc = subprocess.run([sys.executable, "-c", SCRIPT, stage, str(data_dir), str(kill_step)],
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600, capture_output=True, text=True)
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr[-3000:]
    return proc.returncode


def numbers(data_dir: Path, stage: str) -> pd.DataFrame:
    frame = pd.read_csv(data_dir / "units" / stage / f"{KEY}.csv", keep_default_na=False)
    return frame[~frame["metric"].str.startswith("perf/")].reset_index(drop=True)  # wall time differs


@pytest.mark.parametrize("stage,kill_step", [("init", 3), ("rl", 2)])
def test_killed_unit_resumes_from_its_checkpoint_to_the_same_numbers(stage, kill_step, tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    assert run(stage, killed, kill_step) == -signal.SIGKILL
    assert units.last_checkpoint(killed / "checkpoints" / stage / KEY).endswith(f"checkpoint-{kill_step}")
    assert not (killed / "units" / stage / f"{KEY}.csv").exists()
    assert run(stage, killed) == 0  # resumes at step kill_step + 1
    assert run(stage, clean) == 0
    pd.testing.assert_frame_equal(numbers(killed, stage), numbers(clean, stage))
    assert not (killed / "checkpoints" / stage / KEY).exists()  # deleted once the unit is done
    if stage == "rl":
        curves = [pd.read_csv(d / "units" / "rl_curves" / f"{KEY}.csv") for d in (killed, clean)]
        pd.testing.assert_frame_equal(*curves)


def test_a_checkpoint_cut_short_is_skipped_and_removed(tmp_path):
    for step, state in ((2, {"global_step": 2}), (3, None)):  # checkpoint-3 lost its state to a kill
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if state is not None:
            (folder / "trainer_state.json").write_text(json.dumps(state))
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text('{"global_st')
    assert units.last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]
    assert units.last_checkpoint(tmp_path / "none") is None and units.last_checkpoint(None) is None


def test_one_run_folder_takes_other_methods_and_seeds_but_not_other_settings(tmp_path):
    check_unit_settings(tmp_path, real_settings.SMOKE_REAL, ignore=real_settings.PER_UNIT_FIELDS)
    for other in (replace(real_settings.SMOKE_REAL, method="sft"), replace(real_settings.SMOKE_REAL, beta=2.0, seeds=(1,)),
                  replace(real_settings.SMOKE_REAL, save_steps=7)):
        check_unit_settings(tmp_path, other, ignore=real_settings.PER_UNIT_FIELDS)
    with pytest.raises(ValueError, match="holds units made with other settings"):
        check_unit_settings(tmp_path, replace(real_settings.SMOKE_REAL, n_sft=3), ignore=real_settings.PER_UNIT_FIELDS)


def test_a_unit_is_computed_by_one_process_at_a_time(tmp_path):
    from gift_lite import real  # heavy import, only here

    with units.unit_lock(tmp_path, "rl", "sft_betainf_seed1"):
        with pytest.raises(RuntimeError, match=rf"unit rl/sft_betainf_seed1 is being computed by another process "
                                               rf"\(pid {os.getpid()}\)"):
            with units.unit_lock(tmp_path, "rl", "sft_betainf_seed1"):
                pass
        with pytest.raises(RuntimeError, match="unit rl/sft_betainf_seed1 is being computed"):  # run_job takes it first
            real.run_job(real_settings.SMOKE_REAL, "unused", None, tmp_path, "rl", "sft", float("inf"), 1)
        with units.unit_lock(tmp_path, "rl", "sft_betainf_seed0"):  # another unit goes on beside it
            pass
    with units.unit_lock(tmp_path, "rl", "sft_betainf_seed1"):  # released
        pass


POOL_SCRIPT = """
import os, sys, time
from pathlib import Path
from gift_lite.units import run_pool

def job(folder):
    Path(folder, str(os.getpid())).write_text("")
    time.sleep(300)

if __name__ == "__main__":
    run_pool(job, [(sys.argv[1],)], 2, desc="pool", progress=False)
"""


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie left unreaped does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_pool_workers_die_with_the_run_that_started_them(tmp_path):
    script = tmp_path / "pool.py"
    script.write_text(POOL_SCRIPT)
    (tmp_path / "pids").mkdir()
    with open(tmp_path / "run.log", "w") as log:  # the killed run's resource tracker reports its semaphores
        run = subprocess.Popen([sys.executable, str(script), str(tmp_path / "pids")], cwd=tmp_path, stdout=log,
                               stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not list((tmp_path / "pids").iterdir()) and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.2)
        workers = [int(p.name) for p in (tmp_path / "pids").iterdir()]
        started = bool(workers) and all(_running(pid) for pid in workers)
        run.send_signal(signal.SIGKILL)  # as a session's end or `kill -9` leaves it
        run.wait()
    assert started, (tmp_path / "run.log").read_text()[-3000:]
    deadline = time.monotonic() + 20
    while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in workers if _running(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"pool workers {left} outlived the run"
