"""environment.yml and pyproject.toml name the same pinned versions; set-up files agree."""

import re
import tomllib

from gift_lite.repro import repo_root

ROOT = repo_root()
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)\s*(==.+)$")


def pyproject_pins() -> dict[str, str]:
    """``name -> ==spec`` of every pinned requirement (the core's and the colab extra's ranges aside)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs += extra
    return dict(PIN.match(s).groups() for s in specs if PIN.match(s))


def environment_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        match = PIN.match(line.strip().removeprefix("- ").strip())
        if match:
            pins[match.group(1)] = match.group(2)
    return pins


def test_core_and_colab_take_ranges_and_the_replay_extra_pins_them():
    """The core and the colab extra take ranges (a Colab runtime keeps its own torch, transformers,
    numpy, pandas); the replay extra pins each of their packages, and the lock lies inside both."""
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    ranged = [Requirement(s) for s in project["dependencies"] + extras["colab"]]
    replay = {Requirement(s).name for s in extras["replay"]}
    for req in ranged:
        assert req.name in replay, f"{req.name} has no pin in the replay extra"
        assert req.name == "trl" or any(spec.operator == ">=" for spec in req.specifier), str(req)
    assert {"torch", "transformers", "numpy", "pandas"} <= {r.name for r in ranged}


def test_trainer_needs_no_notebook_package():
    """A user who wants GIFTTrainer in their own TRL code installs the core only: no papermill,
    ipykernel, gguf or JupyterLab there, and `import gift_lite.trainer` loads none of the notebooks'
    packages (bitsandbytes aside: transformers and peft load it when it is installed)."""
    import subprocess
    import sys

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    for name in ("papermill", "ipykernel", "gguf", "jupyterlab", "matplotlib", "math-verify", "ipywidgets"):
        assert name not in core, name
    notebook_only = ("papermill", "ipykernel", "gguf", "jupyterlab", "matplotlib", "math_verify", "ipywidgets",
                     "nbformat")
    code = ("import sys, gift_lite.trainer, gift_lite.losses; "
            f"print(sorted(m for m in {notebook_only!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True,
                            env={**__import__("os").environ, "PYTHONPATH": str(ROOT)}).stdout.strip()
    assert loaded == "[]", loaded


def test_environment_yml_matches_pyproject():
    assert environment_pins() == pyproject_pins()


def test_ecosystem_pins_name_a_minor_release():
    pins = pyproject_pins()
    for name in ("transformers", "trl", "peft", "bitsandbytes", "datasets"):
        assert re.fullmatch(r"==\d+\.\d+\.\*", pins[name]), (name, pins[name])


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()


def test_every_notebook_has_a_parameters_cell():
    import nbformat

    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert notebooks
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, path.name
        assert "preset" in tagged[0].source, path.name


def test_papermill_reads_every_parameter():
    """papermill's parser skips a line with two '=' (e.g. one in its comment) with only a warning,
    which hides that parameter from `papermill --help-notebook` and from tools built on it."""
    import ast

    import nbformat
    from papermill.translators import PythonTranslator

    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cell = next(c for c in nbformat.read(path, as_version=4).cells
                    if "parameters" in c.metadata.get("tags", []))
        assigned = [target.id for node in ast.parse(cell.source).body for target in node.targets]
        assert [p.name for p in PythonTranslator.inspect(cell)] == assigned, path.name


def test_make_lab_starts_as_root_too():
    """Jupyter refuses root without --allow-root (Docker, cloud notebooks); a user keeps the default."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}  # under make test
    lines = subprocess.run(["make", "--no-print-directory", "-n", "lab"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=30, check=True).stdout.splitlines()
    recipe = [line for line in lines if "jupyter lab" in line]
    assert len(recipe) == 1 and recipe[0].startswith(".venv/bin/jupyter lab notebooks/"), lines
    assert recipe[0].endswith("--allow-root") == (os.geteuid() == 0)


def test_ci_installs_chromium_for_the_browser_test():
    run = (ROOT / ".ci" / "run").read_text()
    assert "apt-get install" in run and "chromium chromium-driver" in run
    assert run.index("chromium-driver") < run.index("make test")


def test_installed_packages_match_the_lock():
    """The venv holds exactly the locked versions (`make setup` installs under the lock)."""
    import pytest

    from gift_lite import lockfile

    tag, pins = lockfile.read()
    if tag != lockfile.platform_tag():
        pytest.skip(f"requirements.lock was resolved for {tag}, this is {lockfile.platform_tag()}")
    drift = lockfile.differences(pins, lockfile.installed())
    assert not drift, "the environment differs from requirements.lock (run `make setup`, or `make lock` " \
                      "to refresh it):\n" + "\n".join(drift)


def test_lock_admits_every_pin_of_pyproject():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    from gift_lite import lockfile

    pins = lockfile.read()[1]
    for name, spec in pyproject_pins().items():
        locked = pins[canonicalize_name(name)]
        version = str(next(iter(locked.specifier)).version)
        assert Requirement(name + spec).specifier.contains(version), (name, spec, version)


def test_lock_differences_name_each_drift():
    from packaging.requirements import Requirement

    from gift_lite import lockfile

    pins = {n: Requirement(f"{n}=={v}") for n, v in (("fonttools", "4.68.0"), ("torch", "2.13.0"),
                                                      ("numpy", "2.4.6"))}
    present = {"fonttools": "4.69.1", "torch": "2.13.0+cpu", "nvidia-cublas-cu12": "12.8", "triton": "3.5.0",
               "rich": "14.0.0"}
    assert lockfile.differences(pins, present) == [
        "fonttools: locked ==4.68.0, installed 4.69.1", "numpy: locked ==2.4.6, not installed",
        "rich: installed 14.0.0, not in the lock"]


def test_lock_refuses_a_range(tmp_path):
    import pytest

    from gift_lite import lockfile

    path = tmp_path / "requirements.lock"
    path.write_text("# platform: x\nnumpy>=2\n")
    with pytest.raises(ValueError, match="line 2: 'numpy>=2' must pin one version"):
        lockfile.read(path)


def test_setup_installs_under_the_lock():
    make = (ROOT / "Makefile").read_text()
    installs = [line for line in make.splitlines() if "$(PY) -m pip install" in line]
    assert installs and all("-c $(LOCK)" in line for line in installs), installs
    assert "- -c requirements.lock" in (ROOT / "environment.yml").read_text()
