"""The unit of work, shared by every world (the miniature's protocols and real models).

A unit is one method, β and seed at one stage. It writes its own rows file under
``<data_dir>/units/<stage>/<key>.csv`` (atomically) and is skipped when that file exists, so an
interrupted run resumes where it stopped and a finished one re-runs in seconds. Here: the keys and
paths of units, the guard that refuses to mix units made with other settings, ``collect`` (all
finished units as one long table), and the process pool that runs many units.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import re
import shutil
import signal
import sys
import tempfile
from contextlib import contextmanager
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from gift_lite.repro import without_root
from gift_lite.results import RESULT_COLUMNS, write_json

try:
    import fcntl  # POSIX; on Windows units run without the lock of ``unit_lock``
except ImportError:  # pragma: no cover
    fcntl = None


# -- keys, paths and the settings guard ------------------------------------------------------------
def unit_key(method: str, beta: float, seed: int) -> str:
    return f"{method}_beta{beta:g}_seed{seed}"


def check_unit_settings(data_dir: Path, settings, ignore: tuple[str, ...] = ("workers",)) -> None:
    """Record the settings behind ``data_dir``'s units, and refuse to mix units of other settings.

    Units are cached by (method, β, seed) only, so reusing a folder after changing, say, the
    epochs would silently mix two protocols. ``settings`` is ``MiniSettings`` or ``RealSettings``;
    the fields in ``ignore`` are left out: ``workers`` changes no number, and real runs put units
    of several methods, β and seeds in one folder.
    """
    path = Path(data_dir) / "units" / "settings.json"
    if not path.exists():
        write_json(path, _settings_without(settings.config_dict(), ignore))
    elif not recorded_settings_match(data_dir, settings, ignore):
        raise ValueError(f"data_dir={without_root(str(data_dir))!r} holds units made with other settings "
                         f"({path.name}): units of different settings never share a folder, so give this run "
                         "one of its own")


# Fields added after committed runs were recorded, with the value those runs had implicitly:
# a recorded config that lacks one of them is read with that value (settings.json, pretrain.json).
# The section "" holds top-level fields.
ADDED_FIELDS: dict[str, dict] = {
    "": {"decisive_seeds": [], "decisive_beta": None, "unified": []},
    "world": {"max_number": 9, "n_val": 0, "ood_pretrain": 0},
    "eval": {"curve_every": 0, "curve_samples": 8, "n_train_eval": 0, "share_prompts": False},
    "rl": {"gradient_checkpointing": True, "lr_scheduler_type": "linear", "share_prompts": False},
}


# The same for a real-model run's top-level fields (``RealSettings``).
REAL_ADDED_FIELDS: dict = {"reward": "math", "folder": None, "select": None}


def with_added_fields(recorded: dict) -> dict:
    """``recorded`` (a config dict) with every field of ``ADDED_FIELDS`` it lacks set to its old value."""
    if "world" in recorded and "init" in recorded:
        out = {**ADDED_FIELDS[""], **recorded}
    elif "model" in recorded and "init" in recorded:
        out = {**REAL_ADDED_FIELDS, **recorded}
    else:
        out = dict(recorded)
    for section, fields in ADDED_FIELDS.items():
        if section and isinstance(out.get(section), dict):
            out[section] = {**fields, **out[section]}
    return out


def _settings_without(config: dict, ignore: tuple[str, ...]) -> dict:
    """``config`` without the fields in ``ignore``: top-level names, or ``section.field``."""
    out = json.loads(json.dumps(with_added_fields(config)))
    for name in ignore:
        section, _, field = name.rpartition(".")
        (out.get(section, {}) if section else out).pop(field, None)
    return out


def recorded_settings_match(data_dir: Path, settings, ignore: tuple[str, ...]) -> bool:
    """Whether ``data_dir``'s ``units/settings.json`` equals ``settings``, both without ``ignore``."""
    recorded = json.loads((Path(data_dir) / "units" / "settings.json").read_text())
    return _settings_without(recorded, ignore) == _settings_without(settings.config_dict(), ignore)


def unit_path(data_dir: Path, stage: str, key: str) -> Path:
    return Path(data_dir) / "units" / stage / f"{key}.csv"


def adapter_dir(data_dir: Path, stage: str, key: str) -> Path:
    return Path(data_dir) / "adapters" / stage / key


def labelled(frame: pd.DataFrame, method: str, beta: float, seed: int) -> pd.DataFrame:
    """``frame`` (changed in place) with its unit's ``method, beta, seed`` as its first columns."""
    for name, value in (("seed", seed), ("beta", beta), ("method", method)):
        frame.insert(0, name, value)
    return frame


def problem_counts(problems, correct, **labels) -> list[dict]:
    """One row per problem: its id and its number of correct samples (``correct``: (P, S) rewards)."""
    hits = (np.asarray(correct) > 0.5).sum(axis=1)
    return [{**labels, "problem_id": p.id, "correct": int(c)} for p, c in zip(problems, hits)]


# -- gathering finished units ----------------------------------------------------------------------
def collect(data_dir: Path, curves: str = "rl_curves") -> tuple[pd.DataFrame, pd.DataFrame]:
    """All finished units as one long table, and all RL curves of kind ``curves`` (``rl_curves``:
    reward per step; ``rl_val``: validation pass@1) as another."""
    units = Path(data_dir) / "units"
    results = [pd.read_csv(p, keep_default_na=False) for stage in ("base", "init", "rl")
               for p in sorted((units / stage).glob("*.csv"))]
    curve_frames = [pd.read_csv(p) for p in sorted((units / curves).glob("*.csv"))]
    results = pd.concat(results, ignore_index=True) if results else pd.DataFrame(columns=list(RESULT_COLUMNS))
    curve_frames = pd.concat(curve_frames, ignore_index=True) if curve_frames else pd.DataFrame()
    return results, curve_frames


def collect_counts(data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-problem counts of correct samples: of every test evaluation (with its ``stage``), and of
    every RL validation curve (empty frames where a run wrote none)."""
    units = Path(data_dir) / "units"
    frames = [pd.read_csv(p, keep_default_na=False).assign(stage=stage) for stage in ("base", "init", "rl")
              for p in sorted((units / f"{stage}_problems").glob("*.csv"))]
    val = [pd.read_csv(p) for p in sorted((units / "rl_val_problems").glob("*.csv"))]
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(),
            pd.concat(val, ignore_index=True) if val else pd.DataFrame())


# -- running many units ----------------------------------------------------------------------------
def one_thread(function, *args, **kwargs):
    """``function(*args, **kwargs)`` on one torch thread (its numbers then do not depend on how many
    run at once)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return function(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def run_pool(function, jobs: list[tuple], workers: int, *, desc: str, progress: bool = True) -> list:
    """``function(*job)`` for every job, in ``workers`` spawned processes (in order when 1); returns
    the results in the order the jobs finish."""
    bar = tqdm(total=len(jobs), desc=desc, disable=not progress)
    done = []
    if workers <= 1:
        for job in jobs:
            done.append(function(*job))
            bar.update()
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=die_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            futures = [pool.submit(function, *job) for job in jobs]
            for future in as_completed(futures):
                done.append(future.result())
                bar.update()
    bar.close()
    return done


def die_with_parent(parent: int) -> None:
    """A pool process's initialiser: on Linux, the kernel kills it when the process that started it
    dies, so a killed run leaves no worker behind still computing (and checkpointing) a unit."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


@contextmanager
def unit_lock(data_dir: Path, stage: str, key: str):
    """Hold the unit's lock (``<data_dir>/checkpoints/<stage>/<key>.lock``) while computing it.

    A second process that reaches the same unit (a rerun started while an earlier run, or a
    worker it left behind, still computes it) is refused with an error naming the holder, instead
    of training into the same checkpoints. The operating system releases the lock when its
    holder dies, so a killed unit never stays locked. Where ``fcntl`` is missing (Windows) there
    is no lock: run one grid at a time there.
    """
    if fcntl is None:  # pragma: no cover
        yield
        return
    path = checkpoint_dir(data_dir, stage, key).parent / f"{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise RuntimeError(f"unit {stage}/{key} is being computed by another process (pid {holder}); "
                               "wait for it or stop it, then run again") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- resuming a unit at its last Trainer checkpoint -------------------------------------------------
def checkpoint_dir(data_dir: Path, stage: str, key: str) -> Path:
    """``<data_dir>/checkpoints/<stage>/<key>``: the unit's Trainer checkpoints, deleted once it finishes."""
    return Path(data_dir) / "checkpoints" / stage / key


def checkpoint_step(path: str | Path) -> int:
    """The optimizer step of a ``checkpoint-<step>`` folder."""
    return int(Path(path).name.rsplit("-", 1)[1])


def last_checkpoint(folder: Path | None) -> str | None:
    """The newest complete ``checkpoint-<step>`` in ``folder``, or None (start from scratch).

    Trainer writes ``trainer_state.json`` last, and not atomically: a checkpoint whose state does
    not parse was cut short by a kill, and is deleted.
    """
    if folder is None or not Path(folder).is_dir():
        return None
    complete = []
    for path in Path(folder).iterdir():
        if not re.fullmatch(r"checkpoint-\d+", path.name):
            continue
        try:
            json.loads((path / "trainer_state.json").read_text())
            complete.append(path)
        except (OSError, ValueError):
            shutil.rmtree(path, ignore_errors=True)
    return str(max(complete, key=checkpoint_step)) if complete else None


@contextmanager
def output_folder(checkpoints: Path | None):
    """The Trainer's ``output_dir``: the checkpoint folder, or a temporary one when not checkpointing."""
    if checkpoints is not None:
        Path(checkpoints).mkdir(parents=True, exist_ok=True)
        yield str(checkpoints)
        return
    with tempfile.TemporaryDirectory() as scratch:
        yield scratch
