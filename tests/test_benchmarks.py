"""The loss benchmark runs end to end at CI size and writes a well-formed CSV."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "bench_loss.py"
COLUMNS = ["n_tokens", "vocab", "hidden", "method", "status", "peak_mib", "time_s", "repeats",
           "chunk_size", "threads", "memory_method"]
METHODS = {"official", "gift_loss", "fused", "cross_entropy", "matmul_floor"}


def test_bench_loss_tiny_writes_csv_and_run_json(tmp_path):
    out = tmp_path / "loss.csv"
    done = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    frame = pd.read_csv(out)
    assert list(frame.columns) == COLUMNS
    assert set(frame["method"]) == METHODS
    assert (frame["status"] == "ok").all(), frame["status"].tolist()
    for column in ("peak_mib", "time_s"):
        assert all(math.isfinite(v) for v in frame[column]), frame[column].tolist()
    assert (frame["time_s"] > 0).all()
    assert frame.loc[frame["method"] == "fused", "chunk_size"].notna().all()
    run = json.loads(out.with_name("loss_run.json").read_text())
    assert run["config"]["sizes"] == "256x512x32" and "versions" in run
    assert "fused chunk 64: peak =" in done.stdout


STEP_SCRIPT = ROOT / "benchmarks" / "bench_step.py"
STEP_COLUMNS = ["model", "vocab", "hidden", "adapter", "method", "status", "step_s", "tokens_per_s", "peak_mib",
                "cache_build_s", "topk_tv_max", "steps", "repeats", "tokens_per_step", "threads", "device",
                "memory_method"]
STEP_METHODS = {"sft", "gift_logits", "gift_live", "gift_cached", "gift_topk"}


def test_bench_step_tiny_writes_csv_and_run_json(tmp_path):
    out = tmp_path / "step.csv"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_step.py"), "--tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    frame = pd.read_csv(out)
    assert list(frame.columns) == STEP_COLUMNS
    assert set(frame["method"]) == STEP_METHODS and set(frame["adapter"]) == {"lora", "qlora"}
    assert (frame["status"] == "ok").all(), frame["status"].tolist()
    assert (frame["step_s"] > 0).all() and all(math.isfinite(v) for v in frame["tokens_per_s"])
    cached = frame["method"].isin(["gift_cached", "gift_topk"])
    assert (frame.loc[cached, "cache_build_s"] > 0).all()
    assert frame.loc[frame["method"] == "gift_topk", "topk_tv_max"].notna().all()
    run = json.loads(out.with_name("step_run.json").read_text())
    assert run["config"]["tiny"] is True and "load_average_before" in run["config"]
    assert "step time vs sft" in done.stdout


def test_bench_loss_precision_compares_the_value_with_float64(tmp_path):
    out = tmp_path / "loss.csv"
    done = subprocess.run([sys.executable, str(SCRIPT), "--precision", "--sizes", "64x4096x16", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    frame = pd.read_csv(tmp_path / "loss_precision.csv").set_index("method")
    assert set(frame.index) == {"fused", "official", "fused_single_bmm"}
    assert frame["float64_value"].nunique() == 1 and (frame["value"] > 0).all()
    assert frame.loc["fused", "rel_error"] <= 1e-5
    assert json.loads((tmp_path / "loss_precision_run.json").read_text())["config"]["sizes"] == "64x4096x16"
