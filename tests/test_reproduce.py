"""The batch runner on throwaway two-cell notebooks: order, --only, resume, --force, failures.

Each notebook appends its name and preset to a log file, so a test reads which notebooks ran and
in what order. A notebook run starts a kernel: a few seconds each.
"""

import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from gift_lite import reproduce


def write_notebook(path, body: str) -> None:
    params = new_code_cell("preset = None")
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell(body)])
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nbformat.write(nb, path)


def logging_cell(log, name: str) -> str:
    """A cell that appends ``<name> <$GIFT_PRESET> <preset parameter>`` to ``log``."""
    return (f"import os\n"
            f"with open({str(log)!r}, 'a') as f:\n"
            f"    f.write(f'{name} {{os.environ[\"GIFT_PRESET\"]}} {{preset}}\\n')")


@pytest.fixture
def world(tmp_path, monkeypatch):
    """notebooks/01_a and 02_b, each logging its run; the output folder; a reader of the log."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    log = tmp_path / "log.txt"
    for name in ("01_a", "02_b"):
        write_notebook(folder / f"{name}.ipynb", logging_cell(log, name))
    monkeypatch.setattr(reproduce, "notebooks_dir", lambda: folder)
    lines = lambda: log.read_text().splitlines() if log.exists() else []  # noqa: E731
    return folder, tmp_path / "out", lines


def run(out, *args):
    return reproduce.reproduce("smoke", output=out, log=lambda _: None, progress=False, **dict(args))


def test_runs_in_order_into_the_output_folder_then_skips_when_unchanged(world):
    folder, out, lines = world
    done = run(out)
    assert lines() == ["01_a smoke smoke", "02_b smoke smoke"]  # in order, preset injected and in the env
    assert [(p.name, s) for p, s in done] == [("01_a.ipynb", "ran"), ("02_b.ipynb", "ran")]
    assert all(reproduce.is_complete(out / p.name) for p, _ in done)
    assert not reproduce.is_complete(folder / "01_a.ipynb")  # the sources are never executed in place
    manifest = json.loads((out / reproduce.MANIFEST).read_text())
    assert set(manifest) == {"01_a.ipynb", "02_b.ipynb"} and all(e["complete"] for e in manifest.values())

    assert [s for _, s in run(out)] == ["skipped", "skipped"]
    assert len(lines()) == 2


def test_reruns_a_notebook_whose_source_changed(world):
    folder, out, lines = world
    run(out)
    nb = nbformat.read(folder / "02_b.ipynb", as_version=4)
    nb.cells[1].source += "\nx = 1"
    nbformat.write(nb, folder / "02_b.ipynb")
    assert [s for _, s in run(out)] == ["skipped", "ran"]
    assert lines()[-1].startswith("02_b") and len(lines()) == 3


def test_only_and_force(world):
    _, out, lines = world
    assert [p.name for p, _ in run(out, ("only", ["02"]))] == ["02_b.ipynb"]
    assert [s for _, s in run(out, ("only", ["02"]))] == ["skipped"]
    assert [s for _, s in run(out, ("only", ["02"]), ("force", True))] == ["ran"]
    assert lines() == ["02_b smoke smoke"] * 2


def test_stops_at_the_first_failure_showing_the_cell_then_resumes(world, capsys):
    folder, out, lines = world
    write_notebook(folder / "02_b.ipynb", "y = 2\nraise ValueError('boom in b')")
    write_notebook(folder / "03_c.ipynb", logging_cell(out.parent / "log.txt", "03_c"))
    assert reproduce.main(["reproduce", "--preset", "smoke", "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert "02_b.ipynb" in err and "ValueError: boom in b" in err
    assert "raise ValueError('boom in b')" in err and "In [" in err  # the failing cell's source
    assert lines() == ["01_a smoke smoke"]  # 03 never ran
    assert not reproduce.is_complete(out / "02_b.ipynb")

    write_notebook(folder / "02_b.ipynb", "y = 2")  # fixed: 01 is skipped, 02 and 03 run
    assert reproduce.main(["reproduce", "--preset", "smoke", "--output", str(out)]) == 0
    assert "01_a.ipynb skipped" in capsys.readouterr().out
    assert lines() == ["01_a smoke smoke", "03_c smoke smoke"]


def test_in_place_injects_no_parameters(world):
    folder, out, lines = world
    run(out, ("only", ["01"]), ("in_place", True))
    nb = nbformat.read(folder / "01_a.ipynb", as_version=4)
    assert reproduce.is_complete(folder / "01_a.ipynb")
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    assert lines() == ["01_a smoke None"]  # the preset came through $GIFT_PRESET only
    assert [s for _, s in run(out, ("only", ["01"]), ("in_place", True))] == ["skipped"]


def test_input_hash_follows_sources_and_preset_not_outputs(tmp_path):
    path = tmp_path / "01_x.ipynb"
    write_notebook(path, "print(1)")
    digest = reproduce.input_hash(path, "smoke")
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="1\n")]
    nb.cells[1].execution_count = 1
    nbformat.write(nb, path)
    assert reproduce.input_hash(path, "smoke") == digest  # outputs do not count
    assert reproduce.input_hash(path, "mini") != digest
    nb.cells[1].source = "print(2)"
    nbformat.write(nb, path)
    assert reproduce.input_hash(path, "smoke") != digest
    assert any(p.name == "losses.py" for p in reproduce.package_files())


def test_input_hash_follows_the_units_a_replay_reads(tmp_path):
    """A unit that lands after a notebook's last run (committed or not) makes it rerun."""
    path, data = tmp_path / "01_x.ipynb", tmp_path / "data"
    write_notebook(path, "print(1)")
    (data / "run" / "units" / "init").mkdir(parents=True)
    (data / "run" / "results.csv").write_text("a\n1\n")
    digest = reproduce.input_hash(path, "mini", data)
    (data / "run" / "results.csv").write_text("a\n2\n")  # a result the notebook writes: not an input
    assert reproduce.input_hash(path, "mini", data) == digest
    (data / "run" / "units" / "init" / "sft_betainf_seed0.csv").write_text("x\n")
    assert reproduce.input_hash(path, "mini", data) != digest
    assert reproduce.unit_files(data) == [data / "run" / "units" / "init" / "sft_betainf_seed0.csv"]
    assert len(reproduce.unit_files()) > 100  # the committed units


def test_is_complete_wants_every_code_cell_run_without_error(tmp_path):
    path = tmp_path / "n.ipynb"
    write_notebook(path, "print(1)")
    assert not reproduce.is_complete(path)  # never executed
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        cell.execution_count = i + 1
    nbformat.write(nb, path)
    assert reproduce.is_complete(path)
    nb.cells[1].outputs = [nbformat.v4.new_output("error", ename="E", evalue="x", traceback=[])]
    nbformat.write(nb, path)
    assert not reproduce.is_complete(path)
    assert not reproduce.is_complete(tmp_path / "missing.ipynb")


def test_a_deleted_or_edited_output_is_regenerated(world, monkeypatch, tmp_path):
    """`make reproduce` after a result file was deleted runs its notebook again, not "up to date"."""
    folder, out, lines = world
    monkeypatch.setattr(reproduce, "repo_root", lambda: tmp_path)
    result = tmp_path / "data" / "a.csv"
    write_notebook(folder / "01_a.ipynb", logging_cell(tmp_path / "log.txt", "01_a")
                   + f"\nimport pathlib\np = pathlib.Path({str(result)!r})\np.parent.mkdir(exist_ok=True)\n"
                     "p.write_text('x\\n')")
    run(out)
    assert json.loads((out / reproduce.MANIFEST).read_text())["01_a.ipynb"]["outputs"] == {
        "data/a.csv": reproduce._sha256(result)}
    assert [s for _, s in run(out)] == ["skipped", "skipped"]
    result.unlink()
    assert [s for _, s in run(out)] == ["ran", "skipped"] and result.read_text() == "x\n"
    result.write_text("edited\n")
    assert [s for _, s in run(out)] == ["ran", "skipped"] and result.read_text() == "x\n"
    assert [line.split()[0] for line in lines()] == ["01_a", "02_b", "01_a", "01_a"]


def test_cli_explains_itself_and_defaults_to_scratch(capsys):
    with pytest.raises(SystemExit):
        reproduce.main(["--help"])
    text = capsys.readouterr().out
    assert "python -m gift_lite.real" in text and "reproduce" in text and "power" in text
    with pytest.raises(SystemExit):
        reproduce.main(["reproduce", "--help"])
    assert "(default: smoke)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as err:
        reproduce.main(["reproduce", "--only"])
    assert err.value.code == 2 and "--only: expected at least one argument" in capsys.readouterr().err
    assert reproduce.default_output("mini").relative_to(reproduce.repo_root()).parts[0] == "scratch"
    with pytest.raises(SystemExit):
        reproduce.main(["power", "--help"])
    assert "(default: scratch/mini_conf/power.csv)" in " ".join(capsys.readouterr().out.split())


def test_make_help_lists_every_target():
    import os
    import re
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}  # under make test
    make = (reproduce.repo_root() / "Makefile").read_text()
    phony = re.search(r"^\.PHONY: (.+)$", make, re.M).group(1).split()
    shown = subprocess.run(["make", "--no-print-directory", "help"], cwd=reproduce.repo_root(), capture_output=True,
                           text=True, timeout=30, check=True, env=env).stdout
    assert [line.split()[1] for line in shown.splitlines()] == phony
    assert all(re.search(rf"^{t}:", make, re.M) for t in phony)  # no target without a recipe (test-fast was one)


def test_timings_are_recorded_per_notebook_and_preset_and_shown_as_one_table(tmp_path, monkeypatch):
    from gift_lite import reproduce

    ran = []
    monkeypatch.setattr(reproduce, "run_notebook", lambda nb, target, preset, progress=True: ran.append((nb.name, preset)))
    out = tmp_path / "timings.csv"
    table = reproduce.record_timings(["smoke", "mini"], only=["01", "07"], out=out, log=lambda line: None)
    assert ran == [("01_zero_vs_finite_temperature.ipynb", "smoke"), ("07_paper_tables.ipynb", "smoke"),
                   ("01_zero_vs_finite_temperature.ipynb", "mini"), ("07_paper_tables.ipynb", "mini")]
    assert list(table.columns) == ["notebook", "preset", "seconds", "load_before", "machine"]
    assert out.read_text().splitlines()[0] == "notebook,preset,seconds,load_before,machine"
    text = reproduce.timings_table(table.assign(seconds=[3, 5, 20, 40]))
    assert text.splitlines()[:4] == ["| notebook | smoke (s) | mini replay (s) |", "|---|---:|---:|",
                                     "| `01_zero_vs_finite_temperature` | 3 | 20 |", "| `07_paper_tables` | 5 | 40 |"]
    assert f"Measured on {reproduce.machine()}" in text


def test_readme_timings_are_the_committed_timing_file():
    import pandas as pd

    from gift_lite import reproduce

    from gift_lite.repro import repo_root

    readme = (repo_root() / "README.md").read_text(encoding="utf-8")
    table = reproduce.timings_table(pd.read_csv(repo_root() / reproduce.TIMINGS))
    assert f"<!-- timings:start -->\n{table}<!-- timings:end -->" in readme
    timed = set(pd.read_csv(repo_root() / reproduce.TIMINGS)["notebook"])
    assert timed == {nb.stem for nb in reproduce.notebooks()}  # every notebook, none left out
