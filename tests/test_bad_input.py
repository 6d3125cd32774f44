"""Bad input gets a one-line answer naming the argument and its value, and touches no committed file.

Each case of issue 27 as a direct call of the function the notebook or the command line calls
(notebook 06's config and data cells call ``real_settings.configure``, ``real.run_dir``,
``real.clear_run`` and ``real_data.load_data``). ``test_no_case_changes_a_tracked_file`` runs
every case and compares ``git status`` before and after.
"""

import math
import subprocess

import pytest
import torch

from gift_lite import params, real, real_data, real_settings
from gift_lite.repro import repo_root, tracked_files
from gift_lite.trainer import GIFTConfig

ROOT = repo_root()
SAMPLES = "data/samples"


def empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    return str(path)


def load(preset="smoke", **overrides):
    return real_data.load_data(real_settings.configure(preset, **overrides))


# (name, call(tmp_path), the error's type, text the one-line message holds)
CASES = [
    ("empty RL file", lambda t: load(rl_data=empty_file(t)), ValueError, "rl_data='{tmp}/empty.jsonl' gives no RL "
     "prompts: the file has 0 rows"),
    ("empty benchmark", lambda t: load(id_benchmarks=empty_file(t)), ValueError,
     "id_benchmarks: '{tmp}/empty.jsonl' has no problems (the file has 0 rows)"),
    ("empty SFT file", lambda t: load(sft_data=empty_file(t)), ValueError, "sft_data='{tmp}/empty.jsonl': no SFT row"),
    ("rl_data is the SFT file", lambda t: load(rl_data=f"{SAMPLES}/math_sft.jsonl"), ValueError,
     f"rl_data='{SAMPLES}/math_sft.jsonl' gives no RL prompts: the file has 8 rows, and the first 8 are skipped as "
     "the SFT slice"),
    ("beta as text (-r beta inf)", lambda t: real_settings.configure("mini", beta="inf"), ValueError,
     "beta='inf' must be a float >= 0 (inf allowed), or None (papermill's -r passes text"),
    ("negative beta", lambda t: real_settings.configure("mini", beta=-1.0), ValueError, "beta=-1.0 must be a float >= 0"),
    ("negative learning rate", lambda t: real_settings.configure("mini", init_learning_rate=-1), ValueError,
     "init_learning_rate=-1 must be a float > 0"),
    ("an unknown parameter", lambda t: params.check_injected(["", "preset = None", "# Parameters\nlearning_rate = -1\n"]),
     ValueError, "unknown notebook parameter learning_rate=-1"),
    ("GIFTConfig learning_rate 0", lambda t: GIFTConfig(output_dir=str(t), learning_rate=0.0, use_cpu=True),
     ValueError, "learning_rate=0.0 must be a finite number > 0"),
    ("GIFTConfig learning_rate < 0", lambda t: GIFTConfig(output_dir=str(t), learning_rate=-1e-3, use_cpu=True),
     ValueError, "learning_rate=-0.001 must be a finite number > 0"),
    ("fresh on the committed run", lambda t: real.clear_run(real.run_dir("mini", real_settings.CPU_REAL)), ValueError,
     "fresh=True would delete"),
]
if not torch.cuda.is_available():
    CASES.append(("gpu without CUDA", lambda t: real.run_dir("gpu", real_settings.GPU_REAL), ValueError,
                  "preset='gpu' needs a CUDA GPU and torch.cuda.is_available() is False here"))


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_bad_input_fails_in_one_line_naming_it(name, tmp_path):
    _, call, error, text = next(c for c in CASES if c[0] == name)
    with pytest.raises(error) as err:
        call(tmp_path)
    message = str(err.value)
    assert text.format(tmp=tmp_path) in message, message
    assert "\n" not in message and str(ROOT) not in message


def git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout


def test_no_case_changes_a_tracked_file(tmp_path):
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    before = git_status()
    for _, call, error, _ in CASES:
        with pytest.raises(error):
            call(tmp_path)
    assert git_status() == before
    assert not (ROOT / "data" / real_settings.run_name(real_settings.GPU_REAL)).exists()  # no empty gpu folder


def test_beta_zero_is_a_parameter_as_gift_loss_takes_it():
    """β = 0 leaves the base unchanged (README): the notebook takes it like gift_loss and GIFTConfig do."""
    settings = real_settings.configure("smoke", method="gift", beta=0)
    assert settings.beta == 0.0 and settings.init_units() == [("gift", 0.0, 0)]
    assert real_settings.configure("smoke", beta=math.inf).beta == math.inf  # -p beta inf
    assert real_settings.configure("smoke", init_learning_rate=1, rl_learning_rate=2e-5).init.learning_rate == 1.0


def test_a_changed_parameter_gets_a_scratch_folder_of_its_own():
    """The committed folder is only ever the preset's own settings; every other set has its own folder."""
    committed = real.run_dir("mini", real_settings.CPU_REAL)
    assert committed == ROOT / "data" / "real_smollm2-135m-instruct" and tracked_files(committed)
    folders = {real.run_dir("mini", real_settings.configure("mini", **change))
               for change in ({"seed": 5}, {"beta": 5.0}, {"method": "sft"}, {"n_sft": 64}, {"seed": 6})}
    assert len(folders) == 5
    assert all(f.parent == ROOT / "scratch" / "mini" / "data" and f.name.startswith("real_smollm2-135m-instruct-")
               for f in folders)
    assert real.run_dir("mini", real_settings.configure("mini", seed=5)) in folders  # the same settings: the same one
    assert real.figures_dir(committed) == ROOT / "figures"
    assert real.figures_dir(next(iter(folders))) == ROOT / "scratch" / "mini" / "figures"


def test_fresh_clears_a_scratch_run(tmp_path):
    for folder in ("units", "adapters", "checkpoints"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.csv").write_text("1\n")
    real.clear_run(tmp_path)
    assert not any(tmp_path.iterdir())


def test_a_committed_base_is_never_replaced():
    """Notebook 08's force_pretrain=True on mini (and settings other than the committed base's)."""
    from gift_lite import mini
    from gift_lite.presets import PRESETS

    settings = PRESETS["mini"].mini
    base_dir = ROOT / "data" / "mini" / "base"
    if not tracked_files(base_dir):
        pytest.skip("no committed base here")
    before = git_status()
    with pytest.raises(ValueError, match=r"^base_dir='data/mini/base' is a committed base and force_pretrain=True"):
        mini.ensure_base(None, settings, base_dir, force=True)  # refused before the world is used
    assert git_status() == before
