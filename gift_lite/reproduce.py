"""Batch reproduction: execute the numbered notebooks in order with papermill.

``python -m gift_lite reproduce --preset mini`` runs ``notebooks/NN_*.ipynb`` one after another,
injecting the preset into each notebook's ``parameters`` cell, and writes the executed copies to
an output folder (``runs/<preset>/`` by default), never over the sources unless ``--in-place``.
It prints one line per notebook with its elapsed time and stops at the first failure, naming
the notebook and the error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from gift_lite.presets import ENV_VAR, PRESETS
from gift_lite.repro import repo_root


def notebooks(only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks, in order; ``only`` keeps those whose number prefix is listed."""
    found = sorted((repo_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if only:
        unknown = set(only) - {nb.name[:2] for nb in found}
        if unknown:
            raise ValueError(f"only={sorted(unknown)} names no notebook; have {[nb.name[:2] for nb in found]}")
        found = [nb for nb in found if nb.name[:2] in only]
    return found


def run_notebook(source: Path, target: Path, preset: str) -> None:
    """Execute ``source`` into ``target`` on ``preset``.

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
                                   progress_bar=True, kernel_name="python3")
    finally:
        if previous is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = previous


def reproduce(preset: str, only: list[str] | None = None, output: Path | None = None,
              in_place: bool = False) -> list[Path]:
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r} is not one of {sorted(PRESETS)}")
    output = output or repo_root() / "runs" / preset
    done = []
    for nb in notebooks(only):
        target = nb if in_place else output / nb.name
        start = time.monotonic()
        print(f"[{preset}] {nb.name} ...", flush=True)
        run_notebook(nb, target, preset)
        print(f"[{preset}] {nb.name} done in {time.monotonic() - start:.0f} s -> {target}", flush=True)
        done.append(target)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gift_lite")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("reproduce", help="execute the numbered notebooks with papermill")
    rep.add_argument("--preset", default="mini", choices=sorted(PRESETS))
    rep.add_argument("--only", nargs="*", metavar="NN", help="notebook numbers to run, e.g. 01 03")
    rep.add_argument("--output", type=Path, help="folder for executed notebooks (default runs/<preset>)")
    rep.add_argument("--in-place", action="store_true",
                     help="write outputs into the committed notebooks (refreshes what readers see)")
    args = parser.parse_args(argv)
    try:
        reproduce(args.preset, args.only, args.output, args.in_place)
    except Exception as err:  # papermill's error names the failing cell; show it and stop
        print(f"reproduce stopped: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0
