"""Notebook 06's Colab set-up (``gift_lite.colab``): its decisions, and pip's resolution of the
``colab`` extra in an environment that looks like a Colab runtime.

What the environment test simulates, and what it does not: a fresh virtual environment whose
"preinstalled" packages are metadata only (``.dist-info`` folders at Colab-like versions, newer
transformers and accelerate, numpy 2.0, pandas 2.2, no code), and an offline index of empty wheels
(the packages Colab lacks, plus the replay pins of the preinstalled ones, which pip must not pick).
gift-lite is installed from a local folder holding this repository's ``pyproject.toml``. pip's
dry run then shows what the set-up cell would install. It checks the resolution only, not that
gift-lite runs on those versions; nothing is downloaded, and it takes a few seconds.
"""

import json
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from gift_lite import colab
from gift_lite.repro import repo_root

ROOT = repo_root()
COLAB = {"torch": "2.9.0", "transformers": "5.31.0", "accelerate": "1.21.0", "numpy": "2.0.2", "pandas": "2.2.2",
         "datasets": "5.4.0", "peft": "0.22.0", "tokenizers": "0.23.5", "safetensors": "0.8.1", "tqdm": "4.67.1",
         "matplotlib": "3.10.0", "ipykernel": "6.17.1", "ipywidgets": "7.7.1"}  # Colab-like, newer and older
INDEX = {"trl": "1.16.2", "math-verify": "0.9.0", "bitsandbytes": "0.50.1",  # what Colab lacks
         "transformers": "5.23.0", "numpy": "2.4.6", "pandas": "3.1.0",  # replay pins: must not be picked
         "papermill": "2.7.0", "gguf": "0.19.0", "jupyterlab": "4.6.0"}  # the notebooks' extras: must not be picked


def test_requirement_needs_an_address_or_a_folder(tmp_path):
    for kwargs in ({}, {"repo_url": "", "local_copy": ""}):
        with pytest.raises(ValueError, match=r"^REPO_URL and LOCAL_COPY are both empty: set REPO_URL"):
            colab.requirement(**kwargs)
    with pytest.raises(ValueError, match=r"REPO_URL='https://github.com/OWNER/gift-lite' is not a repository"):
        colab.requirement("https://github.com/OWNER/gift-lite")
    with pytest.raises(ValueError, match=r"LOCAL_COPY=.* holds no pyproject.toml"):
        colab.requirement(local_copy=str(tmp_path))
    assert colab.requirement("https://github.com/me/gift-lite") == ["gift-lite[colab] @ git+https://github.com/me/gift-lite"]
    assert colab.requirement(local_copy=str(ROOT)) == ["-e", f"{ROOT}[colab]"]


def test_plan_restarts_only_when_an_installed_package_changes():
    report = {"install": [{"metadata": {"name": "gift-lite", "version": "0.1.0"}},
                          {"metadata": {"name": "trl", "version": "1.16.2"}},
                          {"metadata": {"name": "Math_Verify", "version": "0.9.0"}}]}
    plan = colab.plan(report, {"gift-lite": "0.1.0", "numpy": "2.0.2"})
    assert plan.install == {"gift-lite": "0.1.0", "trl": "1.16.2", "math-verify": "0.9.0"} and not plan.restart
    assert plan.summary() == "Colab set-up: adds trl 1.16.2, math-verify 0.9.0"
    report["install"].append({"metadata": {"name": "numpy", "version": "2.4.6"}})
    plan = colab.plan(report, {"numpy": "2.0.2"})
    assert plan.restart and plan.replaced == {"numpy": ("2.0.2", "2.4.6")}
    assert "changed numpy 2.0.2 -> 2.4.6" in plan.summary() and "restart it" in plan.summary()


def fake_dist_info(site, name, version):
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")


def fake_wheel(folder, name, version):
    stem = f"{name.replace('-', '_')}-{version}"
    with zipfile.ZipFile(folder / f"{stem}-py3-none-any.whl", "w") as whl:
        whl.writestr(f"{stem}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        whl.writestr(f"{stem}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                "Tag: py3-none-any\n")
        whl.writestr(f"{stem}.dist-info/RECORD", "")


def test_colab_like_environment_keeps_its_packages_and_adds_only_what_is_missing(tmp_path):
    venv = tmp_path / "colab"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    site = next((venv / "lib").glob("python3*/site-packages"))
    tools = tmp_path / "tools"  # this environment's pip and setuptools (as Colab has its own), linked
    tools.mkdir()
    for dist in ("pip", "setuptools"):
        files = {str(f).split("/")[0] for f in metadata.distribution(dist).files}
        for top in files - {"..", "__pycache__"}:
            source = Path(metadata.distribution(dist).locate_file(top))
            if source.exists() and not (tools / top).exists():
                (tools / top).symlink_to(source)
    (site / "tools.pth").write_text(f"{tools}\n")
    for name, version in COLAB.items():
        fake_dist_info(site, name, version)
    index = tmp_path / "index"
    index.mkdir()
    for name, version in INDEX.items():
        fake_wheel(index, name, version)
    local = tmp_path / "gift-lite"  # the repository's packaging files, uploaded or on Drive
    (local / "gift_lite").mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "gift_lite/__init__.py"):
        shutil.copy(ROOT / name, local / name)

    plan = colab.setup(local_copy=str(local), python=python, install=False,
                       pip_args=("--no-index", "--find-links", str(index), "--no-build-isolation"))
    assert plan.install == {"gift-lite": "0.1.0", **{n: INDEX[n] for n in ("trl", "math-verify", "bitsandbytes")}}
    assert not plan.restart and "restart" not in plan.summary()
    assert json.loads(subprocess.run([python, "-c", colab.INSTALLED], capture_output=True, text=True,
                                     check=True).stdout)["numpy"] == "2.0.2"  # a dry run: nothing changed

    shutil.rmtree(site / f"numpy-{COLAB['numpy']}.dist-info")  # a runtime older than the code allows
    fake_dist_info(site, "numpy", "1.26.4")
    plan = colab.setup(local_copy=str(local), python=python, install=False,
                       pip_args=("--no-index", "--find-links", str(index), "--no-build-isolation"))
    assert plan.replaced == {"numpy": ("1.26.4", INDEX["numpy"])} and "restart it" in plan.summary()
