"""Paper-layout tables from a small synthetic results frame: statistics, marks, renderings."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from gift_lite import tables
from gift_lite.repro import repo_root
from gift_lite.results import write_text

INF = float("inf")
MINI = "ours · miniature"
REAL = "ours · real"


def synthetic_results() -> pd.DataFrame:
    """base, SFT, GIFT at β = 2 and 4, RL only; three seeds; ID/OOD pass@k and distances."""
    rng = np.random.default_rng(0)
    level = {("sft", INF): 0.30, ("gift", 2.0): 0.40, ("gift", 4.0): 0.35, ("rl_only", INF): 0.20}
    rows = [("base", 0.0, 0, "base", split, f"pass@{k}", 0.1 * k) for split in ("id", "ood") for k in (1, 8)]
    rows += [("base", 0.0, 0, "base", "", "kl_to_base", 0.0), ("base", 0.0, 0, "base", "", "topk_overlap", 1.0)]
    for (method, beta), p in level.items():
        for seed in range(3):
            noise = float(rng.normal(0, 0.01))
            for stage in ("init", "rl"):
                if method == "rl_only" and stage == "init":
                    continue
                bonus = 0.1 if stage == "rl" else 0.0
                rows += [(method, beta, seed, stage, split, f"pass@{k}", min(1.0, p + bonus + 0.05 * k + noise))
                         for split in ("id", "ood") for k in (1, 8)]
            if method != "rl_only":
                rows += [(method, beta, seed, "init", "", "kl_to_base", 1.0 - p + noise),
                         (method, beta, seed, "init", "", "topk_overlap", p + 0.5)]
    return pd.DataFrame(rows, columns=["method", "beta", "seed", "stage", "split", "metric", "value"])


def real_results() -> pd.DataFrame:
    """One seed of a real run: per-benchmark pass@1 (one paper benchmark, one not) and the average."""
    rows = []
    for method, beta, base in (("sft", INF, 0.2), ("gift", 20.0, 0.3)):
        for stage in ("init", "rl"):
            rows += [(method, beta, 0, stage, "id", "gsm8k/pass@1", base),
                     (method, beta, 0, stage, "id", "my_set/pass@1", base + 0.1),
                     (method, beta, 0, stage, "id", "pass@1", base + 0.05)]
    return pd.DataFrame(rows, columns=["method", "beta", "seed", "stage", "split", "metric", "value"])


@pytest.fixture(scope="module")
def reported():
    return tables.read_reported(repo_root() / "data" / "paper_reported.csv")


def build(name, reported, results=None):
    lay = tables.layout(name)
    results = results if results is not None else {MINI: synthetic_results()}
    tasks = {MINI: f"Countdown {lay.split.upper()} test"} if lay.split else {}
    return tables.paper_table(results, reported, lay, tasks=tasks), lay


def cell(cells, block, row, column, stage=None):
    rows = cells[(cells["block"] == block) & (cells["row"] == row) & (cells["column"] == column)]
    if stage is not None:
        rows = rows[rows["stage"] == stage]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_cells_are_mean_and_std_over_seeds(reported):
    cells, _ = build("table1", reported)
    assert list(cells.columns) == list(tables.CELL_COLUMNS)
    values = synthetic_results().query("method == 'gift' and beta == 2.0 and stage == 'rl' and split == 'id' "
                                       "and metric == 'pass@1'")["value"] * 100
    got = cell(cells, MINI, "GIFT (β = 2)", "Countdown ID test pass@1", "after RL")
    assert got["n"] == 3
    assert got["text"] == f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"
    base = cell(cells, MINI, "base", "Countdown ID test pass@1", "before RL")  # one seed: no ± part
    assert base["text"] == "10.0" and base["n"] == 1


def test_best_is_marked_per_block_and_column(reported):
    cells, _ = build("table1", reported)
    after = cells[(cells["block"] == MINI) & (cells["column"] == "Countdown ID test pass@1")
                  & (cells["stage"] == "after RL")]
    assert after.loc[after["best"], "row"].tolist() == ["GIFT (β = 2)"]
    paper = cells[cells["block"] == "paper · Qwen2.5-7B (reported)"]
    assert paper.loc[paper["best"] & (paper["column"] == "Avg. pass@1"), "text"].tolist() == ["39.79‡", "52.43"]
    assert not paper.loc[paper["row"] == "GIFT − SFT (gap)", "best"].any()  # a difference, never ranked

    t3, _ = build("table3", reported)
    kl = t3[(t3["block"] == MINI) & (t3["column"] == "KL to base")]
    assert kl.loc[kl["best"], "row"].tolist() == ["GIFT (β = 2)"]  # lower is better; base (0) is the zero point
    assert not t3.loc[t3["column"] == "entropy", "best"].any()


def test_ties_are_all_marked_and_equal_columns_unmarked(reported):
    results = synthetic_results()
    results.loc[results["metric"] == "pass@1", "value"] = 0.5
    cells, _ = build("table1", reported, {MINI: results})
    column = (cells["block"] == MINI) & (cells["column"] == "Countdown ID test pass@1")
    assert column.sum() == 8 and not cells.loc[column, "best"].any()  # all equal: nothing is best
    results.loc[(results["method"] == "base") & (results["metric"] == "pass@1"), "value"] = 0.1
    cells, _ = build("table1", reported, {MINI: results})
    before = cells[(cells["block"] == MINI) & (cells["column"] == "Countdown ID test pass@1")
                   & (cells["stage"] == "before RL")]
    assert before.loc[before["best"], "row"].tolist() == ["SFT (β = ∞)", "GIFT (β = 2)", "GIFT (β = 4)"]


def test_markdown_and_latex_show_the_marks_and_are_deterministic(reported, tmp_path):
    cells, lay = build("table1", reported)
    md = tables.to_markdown(cells, title=lay.title, notes=tables.block_notes(cells))
    tex = tables.to_latex(cells, title=lay.title, label=lay.name, notes=lay.notes)
    best = cell(cells, MINI, "GIFT (β = 2)", "Countdown ID test pass@1", "after RL")["text"]
    assert f"**{best}**" in md and rf"\textbf{{{tables.latex_escape(best)}}}" in tex
    assert r"\toprule" in tex and r"\cmidrule(lr)" in tex and r"\bottomrule" in tex and "±" not in tex
    assert "ours · miniature: mean ± std over 1–3 seeds." in md

    shuffled = synthetic_results().sample(frac=1.0, random_state=1)  # input order does not matter
    again, _ = build("table1", reported, {MINI: shuffled})
    assert tables.to_markdown(again, title=lay.title, notes=tables.block_notes(again)) == md
    assert tables.to_latex(again, title=lay.title, label=lay.name, notes=lay.notes) == tex
    assert tables.wide(again).equals(tables.wide(cells))
    for i, frame in enumerate((cells, again)):  # the files a rerun writes are byte-identical
        write_text(tmp_path / f"{i}.md", tables.to_markdown(frame, title=lay.title))
        write_text(tmp_path / f"{i}.tex", tables.to_latex(frame, title=lay.title, notes=lay.notes))
    assert (tmp_path / "0.md").read_bytes() == (tmp_path / "1.md").read_bytes()
    assert (tmp_path / "0.tex").read_bytes() == (tmp_path / "1.tex").read_bytes()


def test_reported_cells_sit_beside_ours_never_in_them(reported):
    for name in ("table1", "table2", "table3"):
        cells, lay = build(name, reported)
        paper = cells[cells["block"].str.startswith("paper")]
        assert len(paper) == (reported["table"] == lay.table).sum()
        assert (paper["n"] == 0).all() and (cells.loc[~cells.index.isin(paper.index), "n"] > 0).all()
        assert not cells.duplicated(["block", "row", "stage", "column"]).any()
        if lay.split:  # the miniature's task gets its own columns; split-free metrics share theirs
            assert not set(cells.loc[cells["block"] == MINI, "column"]) & set(paper["column"])
    cells, _ = build("table1", reported)
    assert cell(cells, "paper · Llama-3.1-8B (reported)", "GIFT", "Avg. pass@1")["text"] == "35.60†"  # as printed, marked


def test_absent_reported_cells_stay_absent(reported):
    cells, _ = build("table1", reported, {MINI: synthetic_results(), REAL: real_results()})
    frame = tables.wide(cells)
    # GSM8K appears because the real run measured it; the paper's cells there are unknown, so empty
    assert ("after RL", "GSM8K pass@1") in frame.columns
    assert frame.loc[("paper · Qwen2.5-7B (reported)", "GIFT"), ("after RL", "GSM8K pass@1")] == tables.MISSING
    assert frame.loc[("paper · Qwen2.5-7B (reported)", "GIFT"), ("after RL", "OlympiadBench pass@1")] == "46.96"
    assert frame.loc[("paper · Llama-3.1-8B (reported)", "GIFT"), ("before RL", "Avg. pass@1")] == tables.MISSING
    assert "MATH500 pass@1" not in {c for _, c in frame.columns}  # nobody has a number there
    assert "| — |" in tables.to_markdown(cells)


def test_benchmarks_use_the_papers_spelling_and_order(reported):
    cells, _ = build("table1", reported, {REAL: real_results()})
    after = [c for s, c in tables.wide(cells).columns if s == "after RL"]
    assert after == ["GSM8K pass@1", "OlympiadBench pass@1", "my_set pass@1", "Avg. pass@1"]
    assert cell(cells, REAL, "GIFT (β = 20)", "Avg. pass@1", "after RL")["text"] == "35.0"
    diff = tables.gift_vs_sft(cells, REAL, "GIFT (β = 20)")
    assert len(diff) == 6 and np.allclose(diff["diff"], 10.0)


def test_latex_escapes_text():
    assert tables.latex_escape("GIFT (β = ∞) 5 ± 1 % a_b & c\\d") == (
        r"GIFT ($\beta$ = $\infty$) 5 $\pm$ 1 \% a\_b \& c\textbackslash{}d")
    assert tables.latex_escape("{x} < $y$ | z=nan") == r"\{x\} $<$ \$y\$ \textbar{} z=nan"


def test_verdict_style_frames_render():
    frame = pd.DataFrame({"claim": [1], "verdict": ["inconclusive"], "ours": ["a | b"]})
    assert tables.frame_to_markdown(frame).splitlines()[2] == r"| 1 | inconclusive | a \| b |"
    assert r"p{0.2\linewidth}" in tables.frame_to_latex(frame, widths=(0.2, 0.2, 0.4))
    with pytest.raises(ValueError, match="widths"):
        tables.frame_to_latex(frame, widths=(0.5,))


def test_caveats_mark_their_cells_and_are_explained_in_the_notes(reported):
    lay = tables.layout("table1")
    cells = tables.reported_cells(reported, lay)
    marks = tables.caveat_marks(reported, lay)
    assert len(marks) == 3 and set(marks.values()) == set(tables.CAVEAT_MARKS)
    inferred = marks[next(c for c in marks if c.startswith("the model and the average are inferred"))]
    assert cells.loc[cells["mean"].isin([38.92, 39.79]), "text"].tolist() == [f"38.92{inferred}", f"39.79{inferred}"]
    assert cells.loc[cells["mean"] == 52.43, "text"].tolist() == ["52.43"]  # no caveat: no mark
    notes = tables.caveat_notes(reported, lay)
    assert [n[0] for n in notes] == list(tables.CAVEAT_MARKS) and any("points or relative" in n for n in notes)
    assert any("pass@32" in n for n in notes)
    assert tables.caveat_notes(reported, tables.layout("table3")) == []
    assert r"\textsuperscript{\dag}" in tables.latex_escape("1†")


def test_reported_file_is_fully_used(reported):
    assert list(reported.columns) == ["table", "model", "method", "stage", "benchmark", "metric", "value", "caveat",
                                      "source"]
    assert reported["value"].map(float).notna().all() and (reported["source"].str.contains("docs/paper.md")).all()
    used = sum(len(tables.reported_cells(reported, tables.layout(n))) for n in ("table1", "table2", "table3"))
    assert used == len(reported) == 16


def test_real_runs_are_found_by_their_results_file(tmp_path):
    for name in ("mini", "mini_rl200", "real_a", "theory"):
        (tmp_path / name).mkdir()
    for name in ("mini", "mini_rl200", "real_a"):
        (tmp_path / name / "results.csv").write_text("method\n")
    (tmp_path / "real_a" / "results_run.json").write_text('{"config": {"model": "Qwen/Qwen2.5-0.5B"}}')
    runs = tables.find_runs(tmp_path)
    assert list(runs) == ["real_a"]  # the miniature's runs are tabulated on their own; theory has no results
    assert list(tables.find_runs(tmp_path, "mini_rl*")) == ["mini_rl200"]
    assert tables.run_model(runs["real_a"]) == "Qwen/Qwen2.5-0.5B" and tables.run_model(tmp_path / "theory") is None
    (tmp_path / "real_a" / "results_run.json").write_text(  # a model built locally names its source
        '{"config": {"model": "weights/smollm2-135m-instruct", '
        '"model_source": {"model": "HuggingFaceTB/SmolLM2-135M-Instruct"}}}')
    assert tables.run_model(runs["real_a"]) == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_unknown_layout_names_the_valid_ones():
    with pytest.raises(ValueError, match="table1"):
        tables.layout("table9")


def test_tables_never_import_training_code():
    code = "import sys, gift_lite.tables, gift_lite.claims; assert not {'torch', 'transformers'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
