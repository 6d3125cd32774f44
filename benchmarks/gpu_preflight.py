"""What the GPU check will run with: versions, and the carried packages' unmet requirements.

``gpu_run.sh`` runs this before ``gpu_check.py``. The carried wheels are installed without
dependency resolution (``--no-deps``), so a requirement the machine's image does not meet (say
datasets' ``pyarrow>=24``) shows up here as a warning line, not as a failed install; the check
still runs, and its rows say what failed.

    python benchmarks/gpu_preflight.py
"""

from __future__ import annotations

import platform
from importlib import metadata

from packaging.requirements import Requirement

SHOWN = ("torch", "transformers", "trl", "peft", "bitsandbytes", "datasets", "accelerate", "tokenizers",
         "huggingface-hub", "pyarrow", "fsspec", "dill", "multiprocess", "numpy", "pandas")
CARRIED = ("trl", "bitsandbytes", "datasets", "dill", "multiprocess")  # benchmarks/gpu_carry.sh


def version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def unmet(package: str) -> list[str]:
    """``package``'s unconditional requirements that the installed versions do not satisfy."""
    lines = []
    for text in metadata.requires(package) or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an extra's requirement, or another platform's
        have = version(req.name)
        if have is None or not req.specifier.contains(have, prereleases=True):
            lines.append(f"warning: {package} needs {req}, found {have or 'nothing'}")
    return lines


def main() -> int:
    print(f"python {platform.python_version()}; "
          + ", ".join(f"{name} {version(name) or 'MISSING'}" for name in SHOWN))
    for package in CARRIED:
        if version(package) is None:
            print(f"warning: {package} is not installed")
            continue
        print("\n".join(unmet(package)) or f"{package}: requirements met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
