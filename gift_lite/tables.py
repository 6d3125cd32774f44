"""Tables from the long-format results (``results.RESULT_COLUMNS``): mean ± std over seeds, and
the paper's table layouts with its reported numbers beside ours (notebook 07), rendered as a
pandas frame, Markdown and LaTeX (``booktabs``).

Reads data only; never imports training code.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

INF = float("inf")


def run_label(method: str, beta: float) -> str:
    """``gift β=2`` for GIFT runs; the method name otherwise (SFT is GIFT at β = ∞)."""
    if method == "gift":
        return f"gift β={beta:g}" if math.isfinite(beta) else "gift β=∞"
    return method


def seed_stats(results: pd.DataFrame, *, stage: str, metric: str, split: str = "", spread: bool = False) -> pd.DataFrame:
    """One row per (method, β): ``mean``, ``std`` (ddof 1; 0 for one seed), ``n`` seeds, ``label``;
    with ``spread``, also ``min`` and ``max`` over the seeds (for seed bands)."""
    rows = results[(results["stage"] == stage) & (results["metric"] == metric)
                   & (results["split"].fillna("") == split)]
    grouped = rows.groupby(["method", "beta"], sort=False)["value"]
    extra = {"min": "min", "max": "max"} if spread else {}
    stats = grouped.agg(mean="mean", std="std", n="count", **extra).reset_index()
    stats["std"] = stats["std"].fillna(0.0)
    stats["label"] = [run_label(m, b) for m, b in zip(stats["method"], stats["beta"])]
    return stats


def summary(results: pd.DataFrame, *, stage: str, columns: list[tuple[str, str]], digits: int = 3) -> pd.DataFrame:
    """A method × column table of ``mean ± std`` strings; ``columns`` are (metric, split) pairs."""
    table = {}
    for metric, split in columns:
        stats = seed_stats(results, stage=stage, metric=metric, split=split)
        name = f"{split}/{metric}" if split else metric
        table[name] = {row.label: f"{row.mean:.{digits}f} ± {row.std:.{digits}f}" for row in stats.itertuples()}
    return pd.DataFrame(table).rename_axis("method")


# ---------------------------------------------------------------------------------------------
# Paper-layout tables (notebook 07): the paper's reported cells beside our measured cells
# ---------------------------------------------------------------------------------------------
#
# A table is built as a long frame of *cells* (one row per filled cell, ``CELL_COLUMNS``) and then
# rendered three ways: ``wide`` (pandas), ``to_markdown`` and ``to_latex``. Rows come in blocks,
# one per source: each reported model, the miniature, each real-model run. Paper numbers and ours
# never share a cell, and the best value is marked within a block's column only: numbers from
# different models, benchmarks or tasks are not comparable.

CELL_COLUMNS = ("block", "row", "stage", "column", "mean", "std", "n", "text", "best", "row_rank", "col_rank")
MISSING = "—"  # a cell nobody measured or that the paper has but we do not know

ID_BENCHMARKS = ("GSM8K", "MATH500", "OlympiadBench", "AIME24", "AIME25")  # paper, Table 1 (docs/paper.md §5)
OOD_BENCHMARKS = ("GPQA", "MMLU-Pro", "MMLU-Redux", "ARC-Challenge")  # paper, Table 2 (docs/paper.md §5)
AVERAGE = "Avg."

# Rows in the paper's order (docs/paper.md §4: RL-only, unified methods, SFT-then-RL initialisers, GIFT);
# ``gift_minus_sft`` is a reported difference, never compared with the other rows.
METHOD_NAMES = {
    "base": "base", "rl_only": "RL only", "luffy": "LUFFY", "relift": "ReLIFT", "sft": "SFT (β = ∞)",
    "sft_entropy": "SFT + entropy", "dft": "DFT", "asft": "ASFT", "psft": "PSFT",
    "best_baseline": "best baseline (not named)", "comparator": "comparator (not named)", "gift": "GIFT",
    "gift_minus_sft": "GIFT − SFT (gap)",
}
DIFFERENCE_ROWS = ("gift_minus_sft",)
# Notes every paper table carries (layouts add their own, ``block_notes`` the seeds per block).
COMMON_NOTES = (
    "Paper cells: reported second-hand (docs/paper.md §6; data/paper_reported.csv), as printed; cells and rows "
    "not available to us are left out (—).",
    "Our cells: pass@k in %, mean ± std over seeds. The miniature's are on its Countdown task (ID test → "
    "in-distribution, OOD test → out-of-distribution), not on the paper's benchmarks.",
    "Bold: the best value of its column within its block (one source); numbers from different blocks are "
    "not comparable.",
)
# Every paper cell before RL is of the SFT-stage checkpoint the paper kept, and RL starts from it (docs/paper.md §3).
CHECKPOINT_NOTE = ("Paper cells: the SFT stage's checkpoint was chosen by held-out loss among 10 epochs; one "
                   "digest names the 6th epoch and notes that the main text says one epoch.")
CAVEAT_MARKS = ("†", "‡", "¶")  # footnote marks of the paper cells' caveats (paper_reported.csv, ``caveat``)
# Metrics measured against the base: the base row is their zero point, never the "best".
VERSUS_BASE = ("kl_to_base", "topk_overlap")

METRIC_LABELS = {
    "entropy": "entropy", "kl_to_base": "KL to base", "topk_overlap": "top-K overlap",
    "geometry/base_to_init/cosine": "cos(base, init)", "geometry/base_to_init/l2": "L2(base, init)",
    "geometry/init_to_rl/cosine": "cos(init, RL)", "geometry/init_to_rl/l2": "L2(init, RL)",
}


@dataclass(frozen=True)
class Column:
    """One measured quantity of a layout; split tables expand it to one column per benchmark."""

    stage: str  # init | rl (the base row's stage-``base`` numbers go under init)
    metric: str  # as in results.csv, without a benchmark prefix: pass@1, kl_to_base, ...
    better: str | None = "higher"  # higher | lower | None (no best marked)
    paper_metric: str | None = None  # the metric name in paper_reported.csv when it differs
    label: str | None = None  # column heading after the benchmark; default: METRIC_LABELS or the metric


@dataclass(frozen=True)
class Layout:
    """The shape of one of the paper's tables."""

    name: str  # file stem under figures/tables/
    title: str
    table: str  # the ``table`` value of its rows in data/paper_reported.csv
    split: str  # id | ood: pass@k per benchmark; "": split-free metrics
    columns: tuple[Column, ...]
    benchmarks: tuple[str, ...] = ()  # the paper's benchmark columns, in its order
    stage_labels: tuple[tuple[str, str], ...] = (("init", "before RL"), ("rl", "after RL"))
    notes: tuple[str, ...] = ()


def layout(name: str) -> Layout:
    """``table1`` (in-distribution), ``table2`` (out-of-distribution) or ``table3`` (distribution).

    Table 1 carries pass@8 before RL beside pass@1: the paper's exploration metric (docs/paper.md §5).
    """
    if name == "table1":
        columns = (Column("init", "pass@1"), Column("init", "pass@8"), Column("rl", "pass@1"))
        return Layout("table1_in_distribution", "Table 1 · In-distribution: pass@k (%) before and after RL",
                      "in_distribution", "id", columns, ID_BENCHMARKS, notes=(
                          "Paper row GIFT − SFT (gap): the reported pass@8 gap before RL, never ranked.",
                          CHECKPOINT_NOTE))
    if name == "table2":
        columns = (Column("init", "pass@1", label="accuracy"),
                   Column("rl", "pass@1", paper_metric="accuracy", label="accuracy"))
        return Layout("table2_out_of_distribution", "Table 2 · Out-of-distribution: accuracy (%)",
                      "out_of_distribution", "ood", columns, OOD_BENCHMARKS, notes=(
                          "Accuracy: our pass@1, the share of sampled answers that are correct. Paper cells: "
                          "listed after RL, as our source's comparison includes ReLIFT (an SFT+RL method).",
                          CHECKPOINT_NOTE))
    if name == "table3":
        columns = (Column("init", "entropy", None), Column("init", "kl_to_base", "lower"),
                   Column("init", "topk_overlap", "higher"),
                   Column("init", "geometry/base_to_init/cosine", "higher"),
                   Column("init", "geometry/base_to_init/l2", "lower"),
                   Column("rl", "geometry/init_to_rl/cosine", None), Column("rl", "geometry/init_to_rl/l2", None))
        return Layout("table3_distribution", "Table 3 · Distribution analysis: distance from the base and "
                      "weight geometry", "distribution", "", columns,
                      stage_labels=(("init", "SFT stage (initialiser)"), ("rl", "RL stage")), notes=(
                          "Entropy and KL / top-K overlap to the base: per token on held-out expert solutions "
                          "(nats). Geometry: last decoder layer's merged weights. Bold: closest to the base; "
                          "entropy and the RL-stage geometry are not ranked.", CHECKPOINT_NOTE))
    raise ValueError(f"name={name!r} is not one of 'table1', 'table2', 'table3'")


def row_label(method: str, beta: float | None = None) -> str:
    """``GIFT (β = 2)`` for a GIFT run with a known β; the display name of the method otherwise."""
    if method == "gift" and beta is not None and math.isfinite(beta):
        return f"GIFT (β = {beta:g})"
    return METHOD_NAMES.get(method, method)


def metric_format(metric: str) -> tuple[float, int]:
    """(scale, decimals) for our cells: pass@k and accuracy in %, distances in their own units."""
    if metric.startswith("pass@") or metric == "accuracy":
        return 100.0, 1
    if metric.endswith("/cosine"):
        return 1.0, 6
    return 1.0, {"kl_to_base": 4, "topk_overlap": 3, "entropy": 3}.get(metric, 4)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _bench_label(bench: str, benchmarks: tuple[str, ...]) -> str:
    """The paper's spelling of a benchmark when it is one of the layout's, else the name as given."""
    by_norm = {_norm(b): b for b in benchmarks}
    return by_norm.get(_norm(bench), bench)


def _bench_rank(label: str, benchmarks: tuple[str, ...]) -> tuple[int, str]:
    # the paper's benchmarks in its order, then other test sets by name, the average, and last the
    # paper's cells whose benchmark our source does not name ("")
    if label in benchmarks:
        return benchmarks.index(label), ""
    n = len(benchmarks)
    return {AVERAGE: (n + 1, ""), "": (n + 2, "")}.get(label, (n, label))


def _reported_rows(reported: pd.DataFrame, lay: Layout) -> pd.DataFrame:
    wanted = {(c.stage, c.paper_metric or c.metric) for c in lay.columns}
    rows = reported[reported["table"] == lay.table].fillna("")
    return rows[[(r.stage, r.metric) in wanted for r in rows.itertuples()]]


def caveat_marks(reported: pd.DataFrame, lay: Layout) -> dict[str, str]:
    """Each distinct ``caveat`` of the layout's paper cells -> its mark (``CAVEAT_MARKS``), in file order."""
    caveats = list(dict.fromkeys(c for c in _reported_rows(reported, lay).get("caveat", []) if c))
    if len(caveats) > len(CAVEAT_MARKS):
        raise ValueError(f"{lay.table} has {len(caveats)} caveats, more than the marks {CAVEAT_MARKS}")
    return dict(zip(caveats, CAVEAT_MARKS))


def caveat_notes(reported: pd.DataFrame, lay: Layout) -> list[str]:
    """One note per caveat mark the layout's paper cells carry: ``† <caveat>.``"""
    return [f"{mark} Paper: {caveat}." for caveat, mark in caveat_marks(reported, lay).items()]


def reported_cells(reported: pd.DataFrame, lay: Layout) -> pd.DataFrame:
    """The paper's cells of ``lay`` from ``data/paper_reported.csv`` (read with ``dtype=str``).

    One block per model, ``paper · <model> (reported)``; a cell's text is the value as printed,
    followed by the mark of its caveat, if it has one (``caveat_marks``; ``caveat_notes`` says
    what each mark means). Columns: ``block, method, beta, stage, bench, metric, mean, std, n, text``.
    """
    marks = caveat_marks(reported, lay)
    out = [{"block": f"paper · {r.model} (reported)", "method": r.method, "beta": INF, "stage": r.stage,
            "bench": AVERAGE if r.benchmark == "average" else r.benchmark, "metric": r.metric,
            "mean": float(r.value), "std": math.nan, "n": 0,
            "text": str(r.value) + marks.get(getattr(r, "caveat", ""), "")}
           for r in _reported_rows(reported, lay).itertuples()]
    return pd.DataFrame(out, columns=["block", "method", "beta", "stage", "bench", "metric", "mean", "std", "n",
                                      "text"])


def measured_cells(results: pd.DataFrame, lay: Layout, block: str, *, task: str | None = None) -> pd.DataFrame:
    """Our cells of ``lay`` from a long results table: mean ± std over seeds per (method, β).

    Split-level metrics (``pass@1``) are the average over a run's benchmarks (column ``Avg.``),
    or, when ``task`` is given, the run's single test set (column ``<task>``: the miniature's
    ``Countdown ID test``). Per-benchmark metrics (``gsm8k/pass@1``) go under the benchmark.
    Columns as ``reported_cells``; ``std`` is NaN for one seed.
    """
    out = []
    split = results["split"].fillna("")
    for col in lay.columns:
        stages = ("base", col.stage) if col.stage == "init" else (col.stage,)
        rows = results[results["stage"].isin(stages) & (split == lay.split)]
        if lay.split:
            bench = rows["metric"].str.removesuffix(f"/{col.metric}")
            hit = rows["metric"].str.endswith(f"/{col.metric}") | (rows["metric"] == col.metric)
            bench = bench.where(rows["metric"] != col.metric, task or AVERAGE)
        else:
            hit = rows["metric"] == col.metric
            bench = pd.Series("", index=rows.index)
        rows = rows[hit].assign(bench=[_bench_label(name, lay.benchmarks) for name in bench[hit]])
        scale, digits = metric_format(col.metric)
        for (method, beta, name), group in rows.groupby(["method", "beta", "bench"], sort=False):
            values = group["value"].astype(float) * scale
            n = len(values)
            mean, std = float(values.mean()), float(values.std()) if n > 1 else math.nan
            text = f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"
            out.append({"block": block, "method": method, "beta": float(beta), "stage": col.stage,
                        "bench": name, "metric": col.metric, "mean": round(mean, digits), "std": std, "n": n,
                        "text": text})
    return pd.DataFrame(out, columns=["block", "method", "beta", "stage", "bench", "metric", "mean", "std", "n",
                                      "text"])


def paper_table(results: dict[str, pd.DataFrame], reported: pd.DataFrame, lay: Layout, *,
                tasks: dict[str, str] | None = None) -> pd.DataFrame:
    """The cells of one paper table: the reported blocks first, then one block per entry of ``results``.

    ``results`` maps a block label (``ours · miniature …``) to a long results table;
    ``tasks`` maps a block label to the name of its single test set (see ``measured_cells``).
    Returns a frame with ``CELL_COLUMNS``, one row per filled cell, sorted by row then column:
    ``row`` is the display label (``GIFT (β = 2)``), ``column`` the benchmark and metric
    (``Avg. pass@1``), ``stage`` the group label (``before RL``), ``best`` marks the best mean of
    its block and column (ties all marked; nothing when all are equal or the column is unranked).
    """
    tasks = tasks or {}
    parts = [reported_cells(reported, lay)] + [measured_cells(frame, lay, block, task=tasks.get(block))
                                               for block, frame in results.items()]
    cells = pd.concat([p for p in parts if not p.empty], ignore_index=True)
    if cells.empty:
        return pd.DataFrame(columns=list(CELL_COLUMNS))
    stage_order = [s for s, _ in lay.stage_labels]
    better = {(c.stage, m): c.better for c in lay.columns for m in (c.metric, c.paper_metric or c.metric)}
    blocks = list(dict.fromkeys(cells["block"]))
    cells["column"] = [f"{b} {_column_label(lay, s, m)}".strip()
                       for s, b, m in zip(cells["stage"], cells["bench"], cells["metric"])]
    col_keys = [(stage_order.index(s), _column_index(lay, s, m), _bench_rank(b, lay.benchmarks), c)
                for s, m, b, c in zip(cells["stage"], cells["metric"], cells["bench"], cells["column"])]
    cells["col_rank"] = _dense_rank(col_keys)
    row_keys = [(blocks.index(blk), _method_rank(m), b) for blk, m, b in
                zip(cells["block"], cells["method"], cells["beta"])]
    cells["row_rank"] = _dense_rank(row_keys)
    paper = cells["block"].str.startswith("paper")
    cells["row"] = [row_label(m, None if p else b) for m, b, p in zip(cells["method"], cells["beta"], paper)]
    clash = cells.duplicated(["block", "row", "stage", "column"])
    if clash.any():
        raise ValueError(f"two cells share a place in the table: {cells.loc[clash].iloc[0].to_dict()}")
    cells["best"] = _best(cells, better)
    cells["stage"] = cells["stage"].map(dict(lay.stage_labels))
    cells["n"] = cells["n"].astype(int)
    cells = cells.sort_values(["row_rank", "col_rank"], kind="stable").reset_index(drop=True)
    return cells[list(CELL_COLUMNS)]


def _column_index(lay: Layout, stage: str, metric: str) -> int:
    return next(i for i, c in enumerate(lay.columns) if c.stage == stage and metric in (c.metric, c.paper_metric))


def _column_label(lay: Layout, stage: str, metric: str) -> str:
    col = lay.columns[_column_index(lay, stage, metric)]
    return col.label or METRIC_LABELS.get(col.metric, col.metric)


def _method_rank(method: str) -> int:
    order = list(METHOD_NAMES)
    return order.index(method) if method in order else len(order)


def _dense_rank(keys: list) -> list[int]:
    """0, 1, 2 ... in sorted order of ``keys``; equal keys share a rank."""
    rank = {key: i for i, key in enumerate(sorted(set(keys)))}
    return [rank[key] for key in keys]


def _best(cells: pd.DataFrame, better: dict) -> pd.Series:
    """True where a cell holds the best mean of its block and column (see ``paper_table``)."""
    best = pd.Series(False, index=cells.index)
    for (block, col), group in cells.groupby(["block", "col_rank"], sort=False):
        stage, metric = group["stage"].iloc[0], group["metric"].iloc[0]
        direction = better.get((stage, metric))
        group = group[~group["method"].isin(DIFFERENCE_ROWS)]
        if metric in VERSUS_BASE:
            group = group[group["method"] != "base"]
        if direction is None or group["mean"].nunique() < 2:
            continue
        target = group["mean"].max() if direction == "higher" else group["mean"].min()
        best[group.index[group["mean"] == target]] = True
    return best


# -- rendering ---------------------------------------------------------------------------------------


def _ordered(cells: pd.DataFrame) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(block, row) pairs and (stage, column) pairs in display order."""
    by_row = cells.sort_values("row_rank", kind="stable")
    by_col = cells.sort_values("col_rank", kind="stable")
    return (list(dict.fromkeys(zip(by_row["block"], by_row["row"]))),
            list(dict.fromkeys(zip(by_col["stage"], by_col["column"]))))


def _rendered(cells: pd.DataFrame, escape, bold) -> dict[tuple[str, str, str, str], str]:
    """(block, row, stage, column) -> the cell's text, escaped, with ``bold`` applied to the best."""
    return {(c.block, c.row, c.stage, c.column): bold(escape(c.text)) if c.best else escape(c.text)
            for c in cells.itertuples(index=False)}


def wide(cells: pd.DataFrame) -> pd.DataFrame:
    """The pandas view: index (source, method), columns (stage, column), cell text; ``—`` where absent."""
    rows, cols = _ordered(cells)
    text = _rendered(cells, str, str)
    return pd.DataFrame([[text.get((b, r, s, c), MISSING) for s, c in cols] for b, r in rows],
                        index=pd.MultiIndex.from_tuples(rows, names=["source", "method"]),
                        columns=pd.MultiIndex.from_tuples(cols, names=["stage", ""]))


def styled(cells: pd.DataFrame):
    """``wide(cells)`` as a pandas Styler with the best cells in bold (for notebooks)."""
    frame = wide(cells)
    best = set(_rendered(cells[cells["best"]], str, str))
    bold = pd.DataFrame([["font-weight: bold" if (*idx, *col) in best else "" for col in frame.columns]
                         for idx in frame.index], index=frame.index, columns=frame.columns)
    return frame.style.apply(lambda _: bold, axis=None)


def block_notes(cells: pd.DataFrame) -> list[str]:
    """One line per measured block: how many seeds its means and standard deviations are over."""
    notes = []
    for block, group in cells[cells["n"] > 0].groupby("block", sort=False):
        low, high = int(group["n"].min()), int(group["n"].max())
        seeds = f"{low}" if low == high else f"{low}–{high}"
        notes.append(f"{block}: mean ± std over {seeds} seeds." if high > 1 else f"{block}: one seed (no std).")
    return notes


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def to_markdown(cells: pd.DataFrame, *, title: str = "", notes: tuple[str, ...] | list[str] = ()) -> str:
    """GitHub Markdown: a bold title line, the table (an italic heading row per block, best cells in
    bold, the stage above each column name), then the notes as a list. Deterministic."""
    rows, cols = _ordered(cells)
    text = _rendered(cells, _md_escape, lambda t: f"**{t}**")
    lines = [f"**{title}**", ""] if title else []
    lines += ["| " + " | ".join(["method"] + [f"{s}<br>{c}" for s, c in cols]) + " |",
              "|:--" + "|--:" * len(cols) + "|"]
    for i, (block, row) in enumerate(rows):
        if i == 0 or rows[i - 1][0] != block:
            lines.append(f"| *{_md_escape(block)}* " + "| " * len(cols) + "|")
        lines.append("| " + " | ".join([_md_escape(row)] + [text.get((block, row, s, c), MISSING) for s, c in cols])
                     + " |")
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


# One pass over the text, so a replacement is never escaped again.
_LATEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}", "<": r"$<$", ">": r"$>$", "|": r"\textbar{}", "±": r"$\pm$",
    "β": r"$\beta$", "η": r"$\eta$", "λ": r"$\lambda$", "π": r"$\pi$", "∞": r"$\infty$", "−": r"$-$",
    "→": r"$\to$", "≈": r"$\approx$", "≤": r"$\le$", "≥": r"$\ge$", "‖": r"$\|$", "·": r"$\cdot$", "§": r"\S{}",
    "†": r"\textsuperscript{\dag}", "‡": r"\textsuperscript{\ddag}", "¶": r"\textsuperscript{\P}", "“": "``", "”": "''",
    "—": "---", "–": "--", "…": r"\ldots{}",
}
_LATEX_RE = re.compile("|".join(map(re.escape, _LATEX)))


def latex_escape(text: str) -> str:
    """Plain text (with the Unicode this project prints: β, ∞, ±, −, →, …) as LaTeX source."""
    return _LATEX_RE.sub(lambda m: _LATEX[m.group()], str(text))


def to_latex(cells: pd.DataFrame, *, title: str = "", label: str = "",
             notes: tuple[str, ...] | list[str] = ()) -> str:
    """A ``booktabs`` table: stage groups over the columns (``\\cmidrule``), a ``\\midrule`` and an
    italic heading per block, best cells in ``\\textbf``, notes in small print. Deterministic."""
    rows, cols = _ordered(cells)
    text = _rendered(cells, latex_escape, lambda t: rf"\textbf{{{t}}}")
    groups = [(stage, sum(1 for s, _ in cols if s == stage)) for stage in dict.fromkeys(s for s, _ in cols)]
    lines = [r"\begin{table}[t]", r"\centering", r"\small"]
    lines += [rf"\caption{{{latex_escape(title)}}}"] if title else []
    lines += [rf"\label{{tab:{label}}}"] if label else []
    lines += [r"\begin{tabular}{l" + "r" * len(cols) + "}", r"\toprule",
              " & " + " & ".join(rf"\multicolumn{{{n}}}{{c}}{{{latex_escape(s)}}}" for s, n in groups) + r" \\"]
    starts = [2 + sum(n for _, n in groups[:i]) for i in range(len(groups))]
    lines.append(" ".join(rf"\cmidrule(lr){{{a}-{a + n - 1}}}" for a, (_, n) in zip(starts, groups)))
    lines.append("method & " + " & ".join(latex_escape(c) for _, c in cols) + r" \\")
    for i, (block, row) in enumerate(rows):
        if i == 0 or rows[i - 1][0] != block:
            lines += [r"\midrule", rf"\multicolumn{{{len(cols) + 1}}}{{l}}{{\textit{{{latex_escape(block)}}}}} \\"]
        lines.append(" & ".join([latex_escape(row)] + [text.get((block, row, s, c), "---") for s, c in cols])
                     + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if notes:
        lines += [r"\par\smallskip", r"\begin{minipage}{\linewidth}\footnotesize",
                  r" \\ ".join(latex_escape(note) for note in notes), r"\end{minipage}"]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def frame_to_markdown(frame: pd.DataFrame, *, title: str = "") -> str:
    """A plain text frame (e.g. the verdict table) as a GitHub Markdown table."""
    lines = [f"**{title}**", ""] if title else []
    lines += ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + ":--|" * len(frame.columns)]
    lines += ["| " + " | ".join(_md_escape(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def frame_to_latex(frame: pd.DataFrame, *, widths: tuple[float, ...], title: str = "", label: str = "") -> str:
    """A plain text frame as a ``booktabs`` table of wrapped columns (``widths``: fractions of the line)."""
    if len(widths) != len(frame.columns):
        raise ValueError(f"widths has {len(widths)} entries for {len(frame.columns)} columns")
    spec = "".join(rf"p{{{w:g}\linewidth}}" for w in widths)
    lines = [r"\begin{table}[t]", r"\centering", r"\small"]
    if title:
        lines.append(rf"\caption{{{latex_escape(title)}}}")
    if label:
        lines.append(rf"\label{{tab:{label}}}")
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
              " & ".join(latex_escape(c) for c in frame.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(v) for v in row) + r" \\" for row in frame.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


# -- result files ----------------------------------------------------------------------------------


def read_reported(path) -> pd.DataFrame:
    """``data/paper_reported.csv`` with every field as text, so values keep the paper's digits."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def find_runs(data_root, pattern: str = "real_*") -> dict[str, Path]:
    """Folders ``<data_root>/<pattern>/`` holding a ``results.csv``, by name, sorted: notebook 06's
    real-model runs (``real_<model>``), or notebook 12's longer RL budgets (``mini_rl<steps>``)."""
    found = sorted(p.parent for p in Path(data_root).glob(f"{pattern}/results.csv"))
    return {p.name: p for p in found}


def run_model(run_dir) -> str | None:
    """The model recorded in a run's ``results_run.json``, if any: ``config.model_source.model``
    (the published name, for a model built locally such as SmolLM2's folder), else ``config.model``."""
    path = Path(run_dir) / "results_run.json"
    if not path.exists():
        return None
    config = json.loads(path.read_text()).get("config", {})
    return (config.get("model_source") or {}).get("model") or config.get("model")


def gift_vs_sft(cells: pd.DataFrame, block: str, gift_row: str, sft_row: str = METHOD_NAMES["sft"]) -> pd.DataFrame:
    """Per column of ``block`` where both rows have a cell: their means and ``gift − sft``.

    Columns: ``stage, column, gift, sft, diff`` (means in the table's units), in display order.
    """
    rows = cells[cells["block"] == block]
    a = rows[rows["row"] == gift_row].set_index(["col_rank", "stage", "column"])["mean"]
    b = rows[rows["row"] == sft_row].set_index(["col_rank", "stage", "column"])["mean"]
    both = pd.concat({"gift": a, "sft": b}, axis=1, join="inner").sort_index().reset_index()
    both["diff"] = both["gift"] - both["sft"]
    return both[["stage", "column", "gift", "sft", "diff"]]
