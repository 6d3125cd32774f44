"""Notebook 06 on Google Colab: install gift-lite with what the notebook needs, keeping Colab's packages.

The notebook's set-up cell installs this package alone (``pip install --no-deps``, so that this
module can be imported) and calls ``setup``. ``setup`` asks pip what installing the ``colab``
extra would do (``--dry-run --report``): pip keeps every installed package that satisfies the
extra's ranges (Colab's torch, transformers, numpy, pandas, ...) and adds what is missing (TRL,
Math-Verify, bitsandbytes). It then installs that, and raises ``RestartNeeded`` when a package
Colab had already installed changed version: a module Colab imported at start-up would otherwise
stay at its old version until the session restarts. Nothing here imports torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

PROJECT = "gift-lite"
EXTRA = "colab"
SET_ME = ("set REPO_URL (your GitHub copy of gift-lite, e.g. https://github.com/<you>/gift-lite) or LOCAL_COPY "
          "(its folder, uploaded to /content or on Drive under /content/drive/MyDrive) in the first cell")
INSTALLED = ("import json, importlib.metadata as m; "
             "print(json.dumps({d.metadata['Name'].lower().replace('_', '-'): d.version for d in m.distributions()}))")


class RestartNeeded(RuntimeError):
    """Packages already loaded by Colab changed version: restart the session, then run all again."""


def requirement(repo_url: str | None = None, local_copy: str | None = None) -> list[str]:
    """pip's arguments for gift-lite with the ``colab`` extra: a local folder (installed editable,
    so the notebook finds its ``data/`` there), else ``git+<repo_url>``. A one-line ``ValueError``
    when neither is set, or when ``local_copy`` holds no ``pyproject.toml``."""
    if local_copy:
        if not (Path(local_copy) / "pyproject.toml").is_file():
            raise ValueError(f"LOCAL_COPY={local_copy!r} holds no pyproject.toml: give the folder of the repository")
        return ["-e", f"{local_copy}[{EXTRA}]"]
    if repo_url:
        if not str(repo_url).startswith(("https://", "git@", "ssh://")) or "OWNER" in str(repo_url):
            raise ValueError(f"REPO_URL={repo_url!r} is not a repository address: {SET_ME}")
        return [f"{PROJECT}[{EXTRA}] @ git+{repo_url}"]
    raise ValueError(f"REPO_URL and LOCAL_COPY are both empty: {SET_ME}")


@dataclass
class Plan:
    """What pip would do: every package it installs, and the installed ones it would replace."""

    install: dict[str, str] = field(default_factory=dict)  # name -> version
    replaced: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (installed, new)

    @property
    def restart(self) -> bool:
        return bool(self.replaced)

    def summary(self) -> str:
        added = [f"{n} {v}" for n, v in self.install.items() if n not in self.replaced and n != PROJECT]
        text = "Colab set-up: " + (f"adds {', '.join(added)}" if added else "nothing to add")
        if self.replaced:
            changes = ", ".join(f"{n} {old} -> {new}" for n, (old, new) in self.replaced.items())
            text += (f"; changed {changes}, which this session may have loaded: restart it (Runtime > Restart "
                     "session), then run all again")
        return text


def plan(report: dict, installed: dict[str, str]) -> Plan:
    """The ``Plan`` of a pip ``--report`` against the installed ``name -> version`` (names lower case)."""
    out = Plan()
    for item in report.get("install", []):
        name = item["metadata"]["name"].lower().replace("_", "-")
        version = item["metadata"]["version"]
        out.install[name] = version
        if name != PROJECT and name in installed and installed[name] != version:
            out.replaced[name] = (installed[name], version)
    return out


def installed_versions(python: str = sys.executable) -> dict[str, str]:
    """``name -> version`` of every distribution in ``python``'s environment."""
    done = subprocess.run([python, "-c", INSTALLED], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(done.stdout)


def setup(repo_url: str | None = None, local_copy: str | None = None, *, python: str = sys.executable,
          pip_args: tuple[str, ...] = (), install: bool = True) -> Plan:
    """Install gift-lite's ``colab`` extra into ``python``'s environment, changing as little as pip can.

    With ``install=False`` only the plan is made (pip's dry run). Raises ``RestartNeeded`` after an
    install that replaced a package already installed.
    """
    args = [python, "-m", "pip", "install", "-q", *pip_args, *requirement(repo_url, local_copy)]
    dry = subprocess.run(args + ["--dry-run", "--report", "-"], capture_output=True, text=True, timeout=1800)
    if dry.returncode != 0:
        raise RuntimeError(f"pip could not resolve gift-lite[{EXTRA}]: {dry.stderr.strip()[-2000:]}")
    result = plan(json.loads(dry.stdout), installed_versions(python))
    if install and result.install:
        subprocess.run(args, check=True, timeout=3600)
        if result.restart:
            raise RestartNeeded(result.summary())
    return result
