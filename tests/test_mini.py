"""The miniature's protocol at smoke scale: units resume, and parallel runs give identical numbers."""

import dataclasses

import pandas as pd
import pytest

from gift_lite import mini, units
from gift_lite.presets import PRESETS
from gift_lite.world import build_world

SMOKE = dataclasses.replace(PRESETS["smoke"].mini, baselines=(), betas=(1.0, float("inf")))


@pytest.fixture(scope="module")
def smoke_base(tmp_path_factory):
    base_dir = tmp_path_factory.mktemp("mini") / "base"
    world = build_world(SMOKE.world)
    mini.ensure_base(world, SMOKE, base_dir)
    return world, base_dir


def test_base_is_reused_only_when_settings_match(smoke_base):
    world, base_dir = smoke_base
    assert mini.base_is_current(base_dir, SMOKE)
    other = dataclasses.replace(SMOKE, pretrain=dataclasses.replace(SMOKE.pretrain, max_steps=41))
    assert not mini.base_is_current(base_dir, other)


def test_units_are_deterministic_across_worker_counts_and_resume(smoke_base, tmp_path):
    world, base_dir = smoke_base
    frames = []
    for workers in (1, 2):
        data_dir = tmp_path / f"workers{workers}"
        settings = dataclasses.replace(SMOKE, workers=workers)
        ran = mini.run_units("init", settings, base_dir, data_dir, progress=False)
        assert len(ran) == len(settings.init_runs()) * len(settings.seeds)
        assert mini.run_units("init", settings, base_dir, data_dir, progress=False) == []  # all cached
        frames.append(units.collect(data_dir)[0].sort_values(["method", "beta", "metric"], ignore_index=True))
    pd.testing.assert_frame_equal(frames[0], frames[1])


def test_rl_unit_writes_results_and_curve(smoke_base, tmp_path):
    world, base_dir = smoke_base
    frame = mini.run_rl_unit(world, SMOKE, base_dir, tmp_path, "rl_only", float("inf"), 0)
    assert set(frame["stage"]) == {"rl"}
    results, curves = units.collect(tmp_path)
    assert len(curves) == SMOKE.rl.max_steps
    assert {"pass@1", "kl_to_base", "rl/frac_reward_zero_std"} <= set(results["metric"])


def test_a_grpo_unit_recomputed_from_the_same_start_and_seed_is_bit_identical(smoke_base, tmp_path):
    """GRPO on one thread is deterministic: the same start and seed write the same bytes in every file
    of the unit (results, per-problem counts, reward curve). So the β = 20 placebo's difference from
    SFT after RL (notebook 05) comes from its start, however slightly it differs, not from RL itself."""
    world, base_dir = smoke_base
    for run in ("a", "b"):
        units.one_thread(mini.run_rl_unit, world, SMOKE, base_dir, tmp_path / run, "rl_only", float("inf"), 0)
    written = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / "units").rglob("*.csv"))
    assert len(written) == 3
    for name in written:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_unknown_stage_is_refused(smoke_base, tmp_path):
    with pytest.raises(ValueError, match="stage"):
        mini.run_units("sft", SMOKE, smoke_base[1], tmp_path)


KILL_SCRIPT = """
import dataclasses, sys
from pathlib import Path
from gift_lite import mini
from gift_lite.presets import PRESETS
settings = dataclasses.replace(PRESETS["smoke"].mini, baselines=(), betas=(1.0, float("inf")),
                               rl_methods=("rl_only",))
mini.run_units(sys.argv[1], settings, Path(sys.argv[2]), Path(sys.argv[3]), progress=False)
"""


@pytest.mark.parametrize("stage,after", [("init", "first unit"), ("rl", "3 s")])
def test_killed_run_resumes_to_the_same_numbers(stage, after, smoke_base, tmp_path):
    """SIGKILL mid-run (during SFT units, during GRPO), run again: same numbers as one clean run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    world, base_dir = smoke_base
    settings = dataclasses.replace(SMOKE, rl_methods=("rl_only",))
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, stage, str(base_dir), str(killed)],
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    start = time.monotonic()
    while proc.poll() is None and time.monotonic() - start < 120:
        done = list((killed / "units" / stage).glob("*.csv"))
        if (after == "first unit" and done) or (after == "3 s" and time.monotonic() - start > 3 + 8):
            break  # (8 s: the child's imports)
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    mini.run_units(stage, settings, base_dir, killed, progress=False)
    mini.run_units(stage, settings, base_dir, clean, progress=False)
    frames = [units.collect(d)[0].sort_values(["method", "beta", "metric"], ignore_index=True) for d in (killed, clean)]
    pd.testing.assert_frame_equal(frames[0], frames[1])
    assert not list(killed.rglob("*.tmp")), "a killed run left a temporary file behind"


def test_units_of_other_settings_are_refused(tmp_path):
    units.check_unit_settings(tmp_path, SMOKE)
    units.check_unit_settings(tmp_path, dataclasses.replace(SMOKE, workers=3))  # workers change no number
    other = dataclasses.replace(SMOKE, init=dataclasses.replace(SMOKE.init, num_train_epochs=2))
    with pytest.raises(ValueError, match="other settings"):
        units.check_unit_settings(tmp_path, other)


def test_initialisers_are_reused_only_when_just_rl_changes(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    units.check_unit_settings(src, SMOKE)  # records SMOKE as the settings behind src's units
    for stage, key in (("base", "base"), ("init", "sft_betainf_seed0")):
        units.unit_path(src, stage, key).parent.mkdir(parents=True, exist_ok=True)
        units.unit_path(src, stage, key).write_text("method,value\nsft,0.5\n")
    units.adapter_dir(src, "init", "sft_betainf_seed0").mkdir(parents=True)
    (units.adapter_dir(src, "init", "sft_betainf_seed0") / "adapter_config.json").write_text("{}")
    longer = dataclasses.replace(SMOKE, rl=dataclasses.replace(SMOKE.rl, max_steps=8))
    assert mini.reuse_initialisers(src, dst, longer) == 2
    assert units.unit_path(dst, "init", "sft_betainf_seed0").read_text() == "method,value\nsft,0.5\n"
    assert (units.adapter_dir(dst, "init", "sft_betainf_seed0") / "adapter_config.json").exists()
    assert mini.reuse_initialisers(src, dst, longer) == 0  # what dst has is kept
    assert not list(dst.rglob("*.tmp"))
    with pytest.raises(ValueError, match="holds no initialiser units yet"):
        mini.reuse_initialisers(tmp_path / "empty", dst, longer)
    with pytest.raises(ValueError, match="differ in more than rl"):
        mini.reuse_initialisers(src, tmp_path / "other", dataclasses.replace(longer, seeds=(0, 1)))
