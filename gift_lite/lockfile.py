"""The lock: every package ``make setup`` installs, transitive ones included, at one version each.

``requirements.lock`` is what the committed result files were produced with. A release of a
package nobody names (``fonttools``, pulled in by matplotlib) can change committed bytes (every PDF
figure, for ``fonttools`` 4.69.1), so ``make setup`` installs under the lock as pip constraints, and
``tests/test_packaging.py`` fails when the installed set drifts from it.

``python -m gift_lite.lockfile write`` records the running environment (``make lock`` runs it in a
freshly resolved environment); ``python -m gift_lite.lockfile check`` lists the differences.
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gift_lite.repro import repo_root

LOCK = "requirements.lock"
PROJECT = "gift-lite"  # the editable install of this repository: not a dependency
# Packages a torch build brings with it and that differ by build (the CUDA wheels' runtime):
# the lock is made with the CPU build, so on a GPU machine these are extra and not drift.
TORCH_BUILD = re.compile(r"^(nvidia-.*|triton|cuda-.*)$")


def lock_path(root: Path | None = None) -> Path:
    return (root or repo_root()) / LOCK


def platform_tag() -> str:
    """``cp311-linux-x86_64``: the interpreter and platform a lock was resolved for."""
    return f"cp{sys.version_info.major}{sys.version_info.minor}-{platform.system().lower()}-{platform.machine()}"


def installed() -> dict[str, str]:
    """Every distribution in the running environment, name as ``pip freeze`` spells it -> version,
    the project aside, in canonical-name order."""
    found = {d.metadata["Name"]: d.version for d in metadata.distributions()
             if canonicalize_name(d.metadata["Name"]) != PROJECT}
    return dict(sorted(found.items(), key=lambda item: canonicalize_name(item[0])))


def render(packages: dict[str, str]) -> str:
    """The lock file's text; a local version label (``2.13.0+cpu``) is dropped, since ``==2.13.0``
    admits every build of that release and the CPU build's label is not on the public index."""
    lines = [
        "# Every package `make setup` installs, at the version the committed results were made with.",
        "# Written by `python -m gift_lite.lockfile write` (`make lock` re-resolves, then writes it);",
        "# `make setup` installs under it as pip constraints; tests/test_packaging.py checks the venv.",
        f"# platform: {platform_tag()}",
    ]
    lines += [f"{name}=={version.split('+')[0]}" for name, version in packages.items()]
    return "\n".join(lines) + "\n"


def read(path: Path | None = None) -> tuple[str | None, dict[str, Requirement]]:
    """The lock's platform tag and its requirements, by canonical name."""
    path = path or lock_path()
    if not path.exists():
        raise FileNotFoundError(f"lock file {path} does not exist: run `make lock`")
    tag, pins = None, {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("# platform:"):
            tag = line.split(":", 1)[1].strip()
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        if len(req.specifier) != 1 or next(iter(req.specifier)).operator != "==":
            raise ValueError(f"{path.name} line {number}: {line!r} must pin one version with ==")
        pins[canonicalize_name(req.name)] = req
    return tag, pins


def differences(pins: dict[str, Requirement], present: dict[str, str]) -> list[str]:
    """One line per package whose installed version the lock does not admit, or that only one side has
    (``pins`` by canonical name, as ``read`` gives them; ``present`` by any spelling)."""
    present = {canonicalize_name(name): version for name, version in present.items()}
    out = []
    for name, req in pins.items():
        if name not in present:
            out.append(f"{name}: locked {req.specifier}, not installed")
        elif not req.specifier.contains(present[name], prereleases=True):
            out.append(f"{name}: locked {req.specifier}, installed {present[name]}")
    out += [f"{name}: installed {version}, not in the lock" for name, version in present.items()
            if name not in pins and not TORCH_BUILD.match(name)]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gift_lite.lockfile", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("write", "check"),
                        help="write: record this environment in the lock; check: list how it differs")
    parser.add_argument("--lock", type=Path, default=None, help=f"the lock file (default: {LOCK} at the repo root)")
    args = parser.parse_args(argv)
    path = args.lock or lock_path()
    if args.command == "write":
        path.write_text(render(installed()))
        print(f"wrote {path.name}: {len(installed())} packages for {platform_tag()}")
        return 0
    drift = differences(read(path)[1], installed())
    print("\n".join(drift) if drift else f"the environment matches {path.name}")
    return 1 if drift else 0


if __name__ == "__main__":
    raise SystemExit(main())
