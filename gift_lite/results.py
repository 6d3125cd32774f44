"""Result files: the long-format schema, run JSON, and atomic writes.

Every result file is written to a temporary file in the same folder and renamed into place,
so a killed run never leaves a truncated file for a later notebook to read.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import pandas as pd

from gift_lite.repro import run_info

# One row per measured number (data/<world>/results.csv). stage: base | init | rl;
# split: id | ood | "" for split-free metrics.
RESULT_COLUMNS = ("method", "beta", "seed", "stage", "split", "metric", "value")
STAGES = ("base", "init", "rl")
SPLITS = ("id", "ood", "train", "")


# Whether the last write of each path in this process left its bytes as they were: a run JSON is
# kept when the result beside it came out the same (``write_run_json``).
_UNCHANGED: dict[Path, bool] = {}


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        _UNCHANGED[path.resolve()] = path.exists() and path.read_bytes() == Path(tmp).read_bytes()
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def check_writable(folder: str | Path, *, min_free_mb: float = 50.0) -> Path:
    """Fail before long work starts if ``folder`` cannot be written or its disk is nearly full.

    Creates ``folder`` if needed, writes and removes a probe file, and checks the free space.
    Raises ``ValueError`` naming the folder.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"output folder {str(folder)!r} is not writable: {err.strerror}") from None
    free_mb = shutil.disk_usage(folder).free / 2 ** 20
    if free_mb < min_free_mb:
        raise ValueError(f"output folder {str(folder)!r} has {free_mb:.0f} MB free; need at least {min_free_mb:.0f} MB")
    return folder


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# The writers below return None: a notebook cell that ends with one shows nothing (a returned
# path would print this machine's absolute path under nbval, which ignores a trailing ';').
def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


# The fixed format of floats in result CSVs: 10 significant digits, more than any table or figure
# shows (at most 4), while two machines' float64 arithmetic (other SIMD kernels, other summation
# orders) differs from about the 15th on, so a rerun elsewhere writes the same bytes unless a
# value falls within ~1e-15 of a rounding boundary. Values below 1e-3 are rounded to 12 decimal
# places instead: near zero they are often rounding noise (a KL of -9e-17 for 0) whose every
# digit changes from one machine to the next.
CSV_SIGNIFICANT_DIGITS = 10
CSV_DECIMAL_PLACES = 12
# Unit files (data/<world>/units/) are caches that later runs read back and aggregate: their
# floats are written exactly (shortest round-trip repr), so a replay computes from the very
# float64 values the original run had.
EXACT_FOLDER = "units"


def format_float(value: float) -> str:
    """``value`` as written in a result CSV: ``0.5856838730407641 -> '0.585683873'``.

    Rounded to ``CSV_SIGNIFICANT_DIGITS`` significant digits, or to ``CSV_DECIMAL_PLACES``
    decimals when ``|value| < 1e-3``, then written as Python's shortest repr of the rounded
    float (so ``20.0`` stays ``'20.0'`` and reads back as a float); ``-0.0`` is written ``'0.0'``,
    infinities ``'inf'`` / ``'-inf'``.
    """
    value = float(value)
    if not math.isfinite(value):
        return repr(value)
    if abs(value) >= 10.0 ** (CSV_SIGNIFICANT_DIGITS - CSV_DECIMAL_PLACES - 1):
        value = float(f"{value:.{CSV_SIGNIFICANT_DIGITS}g}")
    else:
        value = round(value, CSV_DECIMAL_PLACES)
    return repr(value + 0.0)  # + 0.0 turns -0.0 into 0.0


def write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    """Write ``frame`` (no index, ``\\n`` line ends) with floats in the fixed ``format_float`` form;
    inside a ``units/`` folder (``EXACT_FOLDER``) floats are written exactly instead, and the unit
    file gets a ``<name>_run.json`` beside it naming the commit of the code that computed it."""
    exact = EXACT_FOLDER in Path(path).parent.parts
    if not exact:
        frame = frame.copy()
        for name in frame.columns[frame.dtypes == object]:  # floats among text: pandas would write their repr
            frame[name] = frame[name].map(lambda v: format_float(v) if isinstance(v, float) and not math.isnan(v)
                                          else v)
    atomic_write(path, lambda p: frame.to_csv(p, index=False, lineterminator="\n",
                                             float_format=None if exact else format_float))
    if exact:  # a unit is computed once (a unit whose file exists is skipped): this records that run
        write_json(run_json_path(path), run_info({"file": Path(path).name}))


def run_json_path(path: str | Path) -> Path:
    """The run JSON of a result file: ``results.csv -> results_run.json``."""
    path = Path(path)
    return path.with_name(f"{path.stem}_run.json")


def _results_of(run_json: Path) -> list[Path]:
    """The result files a run JSON describes: its siblings named ``<stem>.*``."""
    stem = run_json.name.removesuffix("_run.json")
    return sorted(p for p in run_json.parent.glob(f"{stem}.*") if p != run_json)


def _keeps(old: dict, new: dict, run_json: Path) -> bool:
    """Whether a recorded run still describes its result: the same config, the result written
    again in this process with the same bytes, and a recorded commit that names clean code
    (or one no worse than the new record's)."""
    if old.get("config") != json.loads(json.dumps(new["config"], sort_keys=True, default=str)):
        return False
    results = _results_of(run_json)
    if not results or not all(_UNCHANGED.get(p.resolve(), False) for p in results):
        return False
    recorded, now = str(old.get("git_sha", "unknown")), new["git_sha"]
    return not recorded.endswith("+dirty") or now.endswith("+dirty") or now == "unknown"


def write_run_json(path: str | Path, config: dict) -> None:
    """The ``*_run.json`` beside a result file: config, versions, device, git SHA.

    Left as it is when the result it describes came out byte for byte the same under the same
    config (``_keeps``), so a replay changes no run JSON and each keeps naming the run that first
    wrote those bytes; a record that names uncommitted code gives way to a clean one."""
    path, info = Path(path), run_info(config)
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    if old is None or not _keeps(old, info, path):
        write_json(path, info)


def long_rows(rows: list[dict], *, method: str, beta: float, seed: int, stage: str) -> pd.DataFrame:
    """``{split, metric, value}`` dicts of one run as rows of the long results table."""
    frame = pd.DataFrame(rows)
    for name, value in (("stage", stage), ("seed", seed), ("beta", beta), ("method", method)):
        frame.insert(0, name, value)
    return frame[list(RESULT_COLUMNS)]


def check_results(frame: pd.DataFrame) -> pd.DataFrame:
    """Validate a long-format results table; raises ``ValueError`` naming the bad column/row."""
    missing = [c for c in RESULT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"results table is missing columns {missing}; expected {list(RESULT_COLUMNS)}")
    bad_stage = ~frame["stage"].isin(STAGES)
    if bad_stage.any():
        raise ValueError(f"stage={frame.loc[bad_stage, 'stage'].iloc[0]!r} is not one of {STAGES}")
    split = frame["split"].fillna("")
    bad_split = ~split.isin(SPLITS)
    if bad_split.any():
        raise ValueError(f"split={split[bad_split].iloc[0]!r} is not one of {SPLITS}")
    values = pd.to_numeric(frame["value"], errors="coerce")
    bad = values.isna() | values.map(lambda v: isinstance(v, float) and math.isinf(v))
    if bad.any():
        row = frame[bad].iloc[0].to_dict()
        raise ValueError(f"value is not a finite number in row {row}")
    return frame
