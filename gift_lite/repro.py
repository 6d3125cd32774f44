"""Reproducibility helpers: the repository root, seeding, and what a run JSON records."""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

TRACKED_PACKAGES = (
    "torch", "transformers", "trl", "peft", "bitsandbytes", "datasets", "accelerate",
    "tokenizers", "numpy", "pandas", "math-verify", "gift-lite",
)


def repo_root() -> Path:
    """The folder holding ``pyproject.toml`` above this package (works from notebooks/ too)."""
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").exists():
        return here
    return Path.cwd()


def without_root(text: str) -> str:
    """``text`` with the repository root's absolute path taken out of every path in it.

    Files that get committed (adapter configs, executed notebooks) must not carry one machine's
    absolute paths.
    """
    root = str(repo_root())
    return text.replace(root + "/", "").replace(root, ".")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) for a deterministic run on one device."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative int")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def device_info() -> dict[str, str | int]:
    info: dict[str, str | int] = {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count() or 0,
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def notebook_cells(notebook: dict) -> list[dict]:
    """A notebook's cells as what a run executes: type, source and tags, without outputs or counters."""
    return [{"type": c["cell_type"], "source": "".join(c["source"]) if isinstance(c["source"], list) else c["source"],
             "tags": sorted(c.get("metadata", {}).get("tags", []))} for c in notebook["cells"]]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo_root(), capture_output=True, text=True, timeout=10,
                          check=True).stdout


def _only_outputs_differ(name: str) -> bool:
    """Whether the changed tracked file ``name`` is an output rather than code: a result under
    ``data/`` or ``figures/`` (a protocol or other ``.md`` file is not), or a notebook whose cells
    are those of ``HEAD`` (papermill rewrites a notebook run in place, outputs and metadata only)."""
    if name.startswith(("data/", "figures/")):
        return not name.endswith(".md")
    if not name.endswith(".ipynb"):
        return False
    try:
        now = json.loads((repo_root() / name).read_text(encoding="utf-8"))
        committed = json.loads(_git("show", f"HEAD:{name}"))
    except (OSError, ValueError, subprocess.SubprocessError):
        return False
    return notebook_cells(now) == notebook_cells(committed)


def dirty_files() -> list[str]:
    """The tracked files that differ from ``HEAD`` in what they compute: code, configs, notebook
    cells, protocols; results and notebook outputs do not count (``_only_outputs_differ``)."""
    try:
        changed = _git("diff", "--name-only", "HEAD").split()
    except (OSError, subprocess.SubprocessError):
        return []
    return [name for name in changed if not _only_outputs_differ(name)]


def git_sha() -> str:
    """The current commit, ``+dirty`` when code differs from it (``dirty_files``), or ``unknown``
    outside git. A notebook refreshed in place, or the result files it writes, leave it clean."""
    try:
        sha = _git("rev-parse", "HEAD").strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("+dirty" if dirty_files() else "")


_LOADED: tuple[str, list[str]] | None = None


def loaded_code(refresh: bool = False) -> tuple[str, list[str]]:
    """The commit of the code this process runs (``git_sha``) and its dirty files, taken once, when
    this module is imported: a unit that runs for an hour names the code it started with, not a
    commit made while it ran. ``refresh``: take it again."""
    global _LOADED
    if _LOADED is None or refresh:
        sha = git_sha()
        _LOADED = (sha, dirty_files() if sha.endswith("+dirty") else [])
    return _LOADED


def run_info(config: dict) -> dict:
    """What a ``*_run.json`` carries: the config, package versions, device and the git SHA of the
    code this process loaded (``loaded_code``; when ``+dirty``, also the files that made it so)."""
    sha, dirty = loaded_code()
    info = {"config": config, "versions": package_versions(), "device": device_info(), "git_sha": sha}
    if dirty:
        info["dirty_files"] = dirty
    return info


def tracked_files(folder: str | Path) -> list[str]:
    """The files git tracks under ``folder``, relative to the repository root; ``[]`` outside a
    checkout or for a folder outside the repository. A clean-up calls it first: committed results
    are never deleted."""
    root = repo_root()
    try:
        relative = Path(folder).resolve().relative_to(root)
        listed = subprocess.run(["git", "ls-files", "-z", "--", str(relative)], cwd=root, capture_output=True,
                                text=True, timeout=30, check=True).stdout
    except (OSError, ValueError, subprocess.SubprocessError):
        return []
    return [name for name in listed.split("\0") if name]


def file_commit(path: str | Path) -> str:
    """The last commit that changed ``path`` (e.g. a protocol file), or ``unknown`` outside git;
    ``+dirty`` when the file now differs from that commit."""
    root = repo_root()
    try:
        relative = str(Path(path).resolve().relative_to(root))
        sha = subprocess.run(["git", "log", "-1", "--format=%H", "--", relative], cwd=root, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", relative], cwd=root, capture_output=True,
                               text=True, timeout=10, check=True).stdout.strip()
    except (OSError, ValueError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + ("+dirty" if dirty else "")


loaded_code()  # at import: the code this process will run
