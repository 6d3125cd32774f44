"""Notebook parameters: a wrong type or value fails in the config cell, naming the valid values."""

import ast
import math

import nbformat
import papermill as pm
import pytest

from gift_lite import real_settings, theory
from gift_lite.params import FLAG, SEED, Param, assigned_names, check_injected, check_parameters, unknown_injected
from gift_lite.repro import repo_root


@pytest.mark.parametrize("param, good, bad", [
    (Param(int, ge=1), [1, 7, 10 ** 12], [0, -3, 1.0, 1.5, "3", True, None]),
    (Param(float, gt=0, lt=1), [0.5, 1e-9], [0, 1, 1.5, -0.1, math.nan, math.inf, "0.5", False]),
    (Param(float, gt=0, allow_inf=True), [20, 0.1, math.inf], [0, -1, math.nan, -math.inf, "inf"]),
    (Param(str, choices=("gift", "sft")), ["gift", "sft"], ["GIFT", "dpo", 1, None]),
    (Param(str, optional=True), ["Qwen/Qwen2.5-0.5B", None], [3, b"x", ["a"]]),
    (FLAG, [True, False], [0, 1, "True", None]),
    (SEED, [0, 3], [-1, 0.0, "0"]),
])
def test_param_accepts_its_kind_and_range_only(param, good, bad):
    assert all(param.accepts(v) for v in good), good
    assert not any(param.accepts(v) for v in bad), [v for v in bad if param.accepts(v)]


def test_error_names_every_bad_parameter_and_its_valid_values():
    spec = {"n": Param(int, ge=2), "p": Param(float, gt=0, lt=1), "flag": FLAG, "m": Param(str, choices=("a", "b"))}
    check_parameters(spec, n=2, p=0.5, flag=True, m="a")  # all good: no error
    with pytest.raises(ValueError) as err:
        check_parameters(spec, n=1.5, p=2, flag="yes", m="c")
    message = str(err.value)
    for text in ("n=1.5 must be an int >= 2", "p=2 must be a float > 0 and < 1", "flag='yes' must be True or False",
                 "m='c' must be one of ['a', 'b']"):
        assert text in message, message
    with pytest.raises(ValueError, match=r"\['typo'\] are not among the known ones"):
        check_parameters(spec, typo=1)


def test_theory_defaults_are_the_parameter_cell_and_pass_their_own_check():
    """``theory.NOTEBOOK_DEFAULTS`` (behind the checks that hold at the defaults only) is notebook 01's
    parameters cell, and satisfies its spec."""
    source = repo_root() / "notebooks" / "01_zero_vs_finite_temperature.ipynb"
    cell = next(c for c in nbformat.read(source, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    values = {k: ast.literal_eval(v) for k, v in assigned_names(cell.source).items() if k != "preset"}
    assert values == theory.NOTEBOOK_DEFAULTS
    check_parameters(theory.NOTEBOOK_PARAMETERS, **theory.NOTEBOOK_DEFAULTS)


def test_an_injected_parameter_the_notebook_lacks_is_named():
    """papermill's injected cell (``# Parameters``) follows the parameters cell in the kernel's history."""
    history = ["", "preset = None  # a comment\nseed = 0", "# Parameters\nseed = 3\nlearning_rate = -1\nlr = 2\n",
               "x = 1"]
    assert unknown_injected(history) == {"learning_rate": "-1", "lr": "2"}
    with pytest.raises(ValueError, match=r"^unknown notebook parameters learning_rate=-1, lr=2: not in"):
        check_injected(history)
    check_injected(history[:2] + history[3:])  # nothing injected: no error
    check_injected([])  # outside a kernel


def test_configure_checks_types_and_applies_values():
    settings = real_settings.configure("smoke", n_sft=3, beta=5, init_max_length=256, id_benchmarks="a.jsonl, b.jsonl",
                              seed=4, model=None)
    assert settings.n_sft == 3 and settings.beta == 5.0 and isinstance(settings.beta, float)
    assert settings.init.max_length == 256 and settings.id_benchmarks == ("a.jsonl", "b.jsonl")
    assert settings.seeds == (4,) and settings.model == real_settings.SMOKE_REAL.model
    with pytest.raises(ValueError, match=r"n_sft='100' must be an int >= 1, or None"):
        real_settings.configure("smoke", n_sft="100")
    with pytest.raises(ValueError, match=r"method='gfit' must be one of \['asft', 'dft', 'gift'"):
        real_settings.configure("smoke", method="gfit")
    with pytest.raises(ValueError, match=r"beta=-1.0 must be a float >= 0"):
        real_settings.configure("smoke", beta=-1.0)
    with pytest.raises(ValueError, match=r"learning_rate.* not among the known ones"):
        real_settings.configure("smoke", learning_rate=1e-3)


def test_configure_takes_every_documented_parameter():
    """Each name in ``real_settings.PARAMETERS`` reaches its field: ``rl_data`` and ``n_rl`` are top-level
    fields, not ``rl.data`` of the GRPO settings (a TypeError once)."""
    settings = real_settings.configure("smoke", rl_data="x.jsonl", n_rl=7, rl_max_steps=3, rl_max_completion_length=9,
                              init_max_steps=2, eval_max_new_tokens=5, ood_benchmarks="c.jsonl")
    assert settings.rl_data == "x.jsonl" and settings.n_rl == 7 and settings.ood_benchmarks == ("c.jsonl",)
    assert settings.rl.max_steps == 3 and settings.rl.max_completion_length == 9
    assert settings.init.max_steps == 2 and settings.eval.max_new_tokens == 5


# One bad value per notebook, run headlessly as a user would (papermill). Each fails in the cell
# that builds the config, before any work; a kernel start and the imports take a few seconds.
BAD = {
    "01_zero_vs_finite_temperature": ({"p_gold": 5}, "p_gold=5 must be a float > 0 and < 1"),
    "08_lora_world": ({"force_pretrain": "yes"}, "force_pretrain='yes' must be True or False"),
    "09_lora_initialisers": ({"preset": "tiny"}, "preset='tiny' is not one of ['gpu', 'mini', 'smoke']"),
    "06_real_model": ({"n_sft": 0.5}, "n_sft=0.5 must be an int >= 1, or None"),
    "07_paper_tables": ({"include_stand_in": 1}, "include_stand_in=1 must be True or False, or None"),
    "02_protocol": ({"learning_rate": -1}, "unknown notebook parameter learning_rate=-1"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_notebook_stops_at_its_config_cell_on_a_bad_parameter(name, tmp_path, monkeypatch):
    monkeypatch.setenv("GIFT_PRESET", "smoke")
    params, message = BAD[name]
    source = repo_root() / "notebooks" / f"{name}.ipynb"
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(str(source), str(tmp_path / "out.ipynb"), parameters=params, kernel_name="python3",
                            cwd=str(source.parent), progress_bar=False, log_output=False)
    assert err.value.ename == "ValueError" and message in err.value.evalue, err.value.evalue
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    failed = [c for c in executed.cells if c.cell_type == "code" and any(o.output_type == "error" for o in c.outputs)]
    assert len(failed) == 1 and "resolve_preset(preset)" in failed[0].source  # the config cell, after the imports
