"""Batch reproduction: execute the numbered notebooks in order with papermill.

``python -m gift_lite reproduce --preset mini`` runs ``notebooks/NN_*.ipynb`` one after another and
writes the executed copies to an output folder (``scratch/runs/<preset>/`` by default), never over
the sources unless ``--in-place``. It shows papermill's progress bar (cells done, elapsed) and one line
per notebook, and stops at the first failing notebook, printing the failing cell and its error.

Running it again continues where it stopped: a notebook is skipped when its executed copy is
complete (every code cell ran, none raised), its inputs are unchanged since that run, and every
result file it wrote (under ``data/``, ``figures/`` or ``scratch/``, recorded with its sha256) is
still there with those bytes: a deleted or edited output is regenerated. The
inputs are hashed into ``<output>/reproduce.json``: the notebook's cells (not their outputs), the
preset, and the git-tracked ``gift_lite/*.py`` (``--in-place`` runs keep their entries there too,
under ``in-place/``). ``--force`` reruns every selected notebook. The notebooks keep their own
caches of finished work (``mini.py`` units), so a rerun after a library change repeats only what
the change touched.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from gift_lite.presets import ENV_VAR, PRESETS
from gift_lite import repro
from gift_lite.repro import repo_root, without_root
from gift_lite.results import write_json, write_text

MANIFEST = "reproduce.json"  # beside the executed notebooks
SOURCE_LINES = 15  # lines of the failing cell shown in the error message


def notebooks_dir() -> Path:
    return repo_root() / "notebooks"


def notebooks(only: list[str] | None = None, folder: Path | None = None) -> list[Path]:
    """The numbered notebooks, in order; ``only`` keeps those whose number prefix is listed."""
    found = sorted(Path(folder or notebooks_dir()).glob("[0-9][0-9]_*.ipynb"))
    if only:
        unknown = set(only) - {nb.name[:2] for nb in found}
        if unknown:
            raise ValueError(f"only={sorted(unknown)} names no notebook; have {[nb.name[:2] for nb in found]}")
        found = [nb for nb in found if nb.name[:2] in only]
    return found


# -- what a notebook's result depends on -------------------------------------------------------------


def package_files() -> list[Path]:
    """The git-tracked ``gift_lite/*.py`` (every ``gift_lite/*.py`` outside a git checkout)."""
    root = repo_root()
    try:
        listed = subprocess.run(["git", "ls-files", "--", "gift_lite/*.py"], cwd=root, capture_output=True,
                                text=True, timeout=10, check=True).stdout.split()
    except (OSError, subprocess.SubprocessError):
        listed = []
    files = [root / name for name in listed] or list((root / "gift_lite").glob("*.py"))
    return sorted(p for p in files if p.exists())


def notebook_cells(path: Path) -> list[dict]:
    """The cells' type, source and tags: what a run executes, without outputs or counters."""
    return repro.notebook_cells(json.loads(Path(path).read_text(encoding="utf-8")))


def unit_files(data_dir: Path | None = None) -> list[Path]:
    """Every file in a ``units`` folder under ``data_dir`` (``data/``), tracked or not: what a replay
    reads, so a unit that lands after a notebook's last run makes it rerun."""
    root = Path(data_dir or repo_root() / "data")
    return sorted(p for p in root.rglob("*") if p.is_file() and "units" in p.relative_to(root).parts)


def input_hash(source: Path, preset: str, data_dir: Path | None = None) -> str:
    """sha256 of the notebook's cells, the preset, the package source (``package_files``) and the
    unit files under ``data_dir`` (``unit_files``)."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"cells": notebook_cells(source), "preset": preset}, sort_keys=True).encode())
    for path in package_files():
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    root = Path(data_dir or repo_root() / "data")
    for path in unit_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def is_complete(path: Path) -> bool:
    """True when ``path`` is an executed notebook in which every non-empty code cell ran without error."""
    try:
        cells = json.loads(Path(path).read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError):
        return False
    for cell in cells:
        if cell["cell_type"] != "code" or not "".join(cell["source"]).strip():
            continue
        if cell.get("execution_count") is None or any(o.get("output_type") == "error" for o in cell["outputs"]):
            return False
    return True


OUTPUT_FOLDERS = ("data", "figures", "scratch")  # where notebooks write result files


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def written_since(start: float) -> dict[str, str]:
    """``relative path -> sha256`` of every file under ``OUTPUT_FOLDERS`` modified at or after ``start``
    (a notebook's result files: every writer replaces the file, so its time is the write's)."""
    root = repo_root()
    found = {}
    for folder in OUTPUT_FOLDERS:
        for path in (root / folder).rglob("*"):
            if "runs" in path.relative_to(root).parts[:2]:  # executed copies and manifests, not results
                continue
            if path.is_file() and path.stat().st_mtime >= start:
                found[path.relative_to(root).as_posix()] = _sha256(path)
    return dict(sorted(found.items()))


def changed_outputs(entry: dict) -> list[str]:
    """The recorded outputs of a manifest entry that are missing or hold other bytes; a run recorded
    before outputs were (no ``outputs`` key) counts as changed."""
    if "outputs" not in entry:
        return ["(outputs not recorded)"]
    root = repo_root()
    return [name for name, digest in entry["outputs"].items()
            if not (root / name).is_file() or _sha256(root / name) != digest]


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else {}


# -- running ----------------------------------------------------------------------------------------


class NotebookFailed(RuntimeError):
    """A notebook raised: which notebook, which cell (index in the executed copy and ``In [n]``),
    the cell's source and the error."""

    def __init__(self, notebook: Path, target: Path, cell_index: int, exec_count, source: str, ename: str,
                 evalue: str):
        self.notebook, self.target, self.cell_index, self.exec_count = notebook, target, cell_index, exec_count
        self.source, self.ename, self.evalue = source, ename, evalue
        super().__init__(f"{notebook.name} failed at cell {cell_index} (In [{exec_count}]): {ename}: {evalue}")

    def report(self) -> str:
        lines = self.source.splitlines()
        shown = lines[:SOURCE_LINES] + ([f"... ({len(lines) - SOURCE_LINES} more lines)"]
                                        if len(lines) > SOURCE_LINES else [])
        return "\n".join([f"reproduce stopped at {self.notebook.name}, cell {self.cell_index} "
                          f"(In [{self.exec_count}]):", *("    " + line for line in shown),
                          f"{self.ename}: {self.evalue}",
                          f"The executed copy, error included, is {self.target}. Fix it and run the same "
                          "command again: finished notebooks are skipped."])


def run_notebook(source: Path, target: Path, preset: str, *, progress: bool = True) -> None:
    """Execute ``source`` into ``target`` on ``preset``; the repository's absolute path is then
    taken out of ``target`` (papermill's metadata, printed paths, warnings), so a committed
    notebook never carries one machine's paths.

    The preset travels in ``$GIFT_PRESET``; it is also injected as a papermill parameter into
    executed copies, but never into a notebook refreshed in place: an injected
    ``preset = "mini"`` cell would make later smoke runs of that notebook write committed results.
    """
    import papermill  # imported here: papermill is slow to import and only the runner needs it

    target.parent.mkdir(parents=True, exist_ok=True)
    parameters = {} if target.resolve() == source.resolve() else {"preset": preset}
    previous = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = preset  # the kernel inherits it
    try:
        papermill.execute_notebook(str(source), str(target), parameters=parameters, cwd=str(source.parent),
                                   progress_bar={"desc": source.stem} if progress else False,
                                   kernel_name="python3")
    finally:
        if target.exists():  # also after a failure: the copy with the error is kept for reading
            write_text(target, without_root(target.read_text(encoding="utf-8")))
        if previous is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = previous


def reproduce(preset: str, only: list[str] | None = None, output: Path | None = None, in_place: bool = False,
              force: bool = False, *, log: Callable[[str], None] = print,
              progress: bool = True) -> list[tuple[Path, str]]:
    """Run the selected notebooks in order; returns ``(target, "ran" | "skipped")`` per notebook.

    Raises ``NotebookFailed`` at the first notebook that raises (the notebooks after it do not run).
    """
    from papermill.exceptions import PapermillExecutionError

    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r} is not one of {sorted(PRESETS)}")
    output = Path(output or default_output(preset))
    manifest = read_manifest(output)
    done = []
    for nb in notebooks(only):
        target = nb if in_place else output / nb.name
        key = f"in-place/{nb.name}" if in_place else nb.name
        digest = input_hash(nb, preset)
        entry = manifest.get(key, {})
        current = not force and entry.get("hash") == digest and entry.get("complete") and is_complete(target)
        changed = changed_outputs(entry) if current else []
        if current and not changed:
            log(f"[{preset}] {nb.name} skipped: up to date ({without_root(str(target))}; --force reruns it)")
            done.append((target, "skipped"))
            continue
        log(f"[{preset}] {nb.name} ..." + (f" (outputs missing or changed: {', '.join(changed[:3])}"
                                          f"{' ...' if len(changed) > 3 else ''})" if changed else ""))
        start = time.monotonic()
        since = time.time()
        try:
            run_notebook(nb, target, preset, progress=progress)
        except PapermillExecutionError as err:
            manifest[key] = {"hash": digest, "preset": preset, "complete": False}
            write_json(output / MANIFEST, manifest)
            raise NotebookFailed(nb, target, err.cell_index, err.exec_count, err.source, err.ename,
                                 err.evalue) from None
        manifest[key] = {"hash": digest, "preset": preset, "complete": is_complete(target),
                         "outputs": written_since(since)}
        write_json(output / MANIFEST, manifest)
        log(f"[{preset}] {nb.name} done in {time.monotonic() - start:.0f} s -> {without_root(str(target))}")
        done.append((target, "ran"))
    return done


def default_output(preset: str) -> Path:
    """``scratch/runs/<preset>``: the executed copies and the resume manifest (ignored by git)."""
    return repo_root() / "scratch" / "runs" / preset


# -- how long each notebook takes (data/timings.csv, the README's notebook table) ------------------------
TIMINGS = Path("data/timings.csv")


def machine() -> str:
    """The machine in words: the CPU model and its core count, e.g. ``AMD EPYC 7B13, 2 cores``."""
    model = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def record_timings(presets: list[str], only: list[str] | None = None, out: Path | None = None, *,
                   log: Callable[[str], None] = print) -> pd.DataFrame:
    """Run every selected notebook on each preset (executed copies under ``scratch/runs/timings/<preset>/``;
    the committed notebooks are left alone) and write ``out`` (default ``data/timings.csv``): per notebook and preset
    its wall time in seconds, the 1-minute load average when it started and the machine. Under
    ``mini`` with the committed units this is the replay, which trains nothing."""
    import pandas as pd

    from gift_lite.results import write_csv

    rows = []
    for preset in presets:
        for nb in notebooks(only):
            load = os.getloadavg()[0]
            start = time.monotonic()
            run_notebook(nb, default_output("timings") / preset / nb.name, preset, progress=False)
            rows.append({"notebook": nb.stem, "preset": preset, "seconds": round(time.monotonic() - start),
                         "load_before": round(load, 1), "machine": machine()})
            log(f"[{preset}] {nb.name}: {rows[-1]['seconds']} s (load {load:.1f})")
    table = pd.DataFrame(rows)
    write_csv(out or repo_root() / TIMINGS, table)
    return table


def timings_table(table) -> str:
    """``data/timings.csv`` as the README's Markdown table: one row per notebook, one column per preset."""
    wide = table.pivot(index="notebook", columns="preset", values="seconds")
    presets = [p for p in ("smoke", "mini", "gpu") if p in wide.columns]
    heads = {"smoke": "smoke (s)", "mini": "mini replay (s)", "gpu": "gpu (s)"}
    lines = ["| notebook | " + " | ".join(heads[p] for p in presets) + " |",
             "|---|" + "---:|" * len(presets)]
    lines += [f"| `{name}` | " + " | ".join(f"{wide.loc[name, p]:.0f}" for p in presets) + " |" for name in wide.index]
    loads = table.groupby("preset")["load_before"].agg(["min", "max"])
    notes = "; ".join(f"{p} at load {loads.loc[p, 'min']:g}–{loads.loc[p, 'max']:g}" for p in presets)
    return "\n".join(lines) + f"\n\nMeasured on {table['machine'].iloc[0]} ({notes}).\n"


POWER_SEEDS = (3, 5, 8, 10, 12, 15, 20)  # data/mini_conf/PROTOCOL.md §6: the grid of the power analysis
POWER_PROBLEMS = (200, 500, 1000)


def write_power(pilot: Path, out: Path) -> int:
    """``power.csv`` (and its run JSON) of ``protocol.power_analysis`` on ``pilot``'s units."""
    from gift_lite.protocol import power_analysis
    from gift_lite.results import write_csv, write_run_json

    if not (Path(pilot) / "units").is_dir():
        print(f"power stopped: pilot={str(pilot)!r} has no units/ folder", file=sys.stderr)
        return 1
    table = power_analysis(pilot, POWER_SEEDS, POWER_PROBLEMS)
    write_csv(out, table)
    write_run_json(Path(out).with_name(Path(out).stem + "_run.json"),
                   {"pilot": str(pilot), "seeds": POWER_SEEDS, "problems": POWER_PROBLEMS})
    print(f"wrote {out} ({len(table)} rows)")
    return 0


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, unless it is None or False (its help says it in words)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


DESCRIPTION = """\
gift-lite's command line. `reproduce` executes the numbered notebooks with papermill; `power`
writes the confirmatory protocol's power analysis. The real-model runs have their own entry,
`python -m gift_lite.real` (`init`: one SFT/GIFT initialiser, also under `accelerate launch`;
`run`: every unit of a preset's run). Every default writes under scratch/ (ignored by git);
`--preset mini` refreshes the committed data/ and figures/ (with the committed bytes)."""


def main(argv: list[str] | None = None) -> int:
    defaults = HelpFormatter
    parser = argparse.ArgumentParser(prog="python -m gift_lite", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{reproduce,power}")
    rep = sub.add_parser("reproduce", formatter_class=defaults, help="execute the numbered notebooks with papermill",
                         description="Execute the numbered notebooks in order on one preset; a notebook whose "
                                     "inputs and outputs are unchanged since its last complete run is skipped. "
                                     "smoke (seconds per notebook) writes under scratch/; mini replays the "
                                     "committed units and rewrites data/ and figures/ with the committed bytes.")
    rep.add_argument("--preset", default="smoke", choices=sorted(PRESETS), help="the scale of every notebook")
    rep.add_argument("--only", nargs="+", metavar="NN", help="notebook numbers to run, e.g. 01 03 (default: all)")
    rep.add_argument("--output", type=Path, help="folder for executed notebooks and the resume manifest "
                                                  "(default: scratch/runs/<preset>)")
    rep.add_argument("--force", action="store_true", help="rerun notebooks that are up to date")
    rep.add_argument("--in-place", action="store_true",
                     help="write outputs into the committed notebooks (refreshes what readers see); "
                          "the resume manifest stays in the output folder")
    power = sub.add_parser("power", formatter_class=defaults,
                           help="the confirmatory protocol's power analysis from the pilot's units",
                           description="The power analysis of data/mini_conf/PROTOCOL.md §6 from the pilot "
                                       "protocol's units: power.csv and its run JSON.")
    timings = sub.add_parser("timings", formatter_class=defaults,
                             help="time every notebook on each preset (the README's notebook table)",
                             description="Run every selected notebook on each preset (executed copies under "
                                         "scratch/runs/timings/) and write its wall time, the load average and the "
                                         "machine to a CSV; the README's table is data/timings.csv, written with "
                                         "--out data/timings.csv.")
    timings.add_argument("--presets", nargs="+", default=["smoke", "mini"], choices=sorted(PRESETS))
    timings.add_argument("--only", nargs="+", metavar="NN", help="notebook numbers to time (default: all)")
    timings.add_argument("--out", type=Path, default=Path("scratch/timings.csv"), help="the CSV to write")
    power.add_argument("--pilot", type=Path, default=Path("data/mini_ft"), help="the pilot protocol's folder")
    power.add_argument("--out", type=Path, default=Path("scratch/mini_conf/power.csv"),
                       help="the CSV to write (notebook 04 writes the committed data/mini_conf/power.csv)")
    args = parser.parse_args(argv)
    if args.command == "power":
        return write_power(args.pilot, args.out)
    if args.command == "timings":
        record_timings(args.presets, args.only, args.out, log=lambda line: print(line, flush=True))
        return 0
    log = lambda line: print(line, flush=True)  # noqa: E731
    try:
        done = reproduce(args.preset, args.only, args.output, args.in_place, args.force, log=log)
    except NotebookFailed as err:
        print(err.report(), file=sys.stderr, flush=True)
        return 1
    except Exception as err:  # a missing kernel, an unknown notebook number, ...: say what and stop
        print(f"reproduce stopped: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    ran = sum(status == "ran" for _, status in done)
    log(f"[{args.preset}] {ran} notebook(s) ran, {len(done) - ran} up to date")
    return 0
