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


RL_SCRIPT = ROOT / "benchmarks" / "bench_rl.py"
RL_COLUMNS = ["part", "config", "status", "s_per_step", "s_per_completion", "completions_per_s", "tokens_per_s",
              "speedup", "completions_per_update", "repeats", "threads", "load_avg"]


def test_bench_rl_tiny_writes_csv_and_run_json(tmp_path):
    out = tmp_path / "rl_step.csv"
    done = subprocess.run([sys.executable, str(RL_SCRIPT), "--tiny", "--out", str(out), "--rl-configs",
                           "committed,full_nogc_len16", "--eval-configs", "committed,merged_len16", "--steps", "2",
                           "--warmup", "1", "--repeats", "1", "--agreement", "--agreement-seeds", "1",
                           "--agreement-steps", "2"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    frame = pd.read_csv(out)
    assert list(frame.columns) == RL_COLUMNS
    assert (frame["status"] == "ok").all(), frame["status"].tolist()
    assert list(zip(frame["part"], frame["config"])) == [("rl", "committed"), ("rl", "full_nogc_len16"),
                                                         ("eval", "committed"), ("eval", "merged_len16")]
    assert (frame["s_per_completion"] > 0).all() and frame["speedup"].notna().all()
    assert frame.loc[frame["config"] == "committed", "speedup"].tolist() == [1.0, 1.0]
    assert (frame.loc[frame["part"] == "rl", "completions_per_update"] == 16).all()
    agreement = pd.read_csv(tmp_path / "rl_agreement.csv")
    assert set(agreement["config"]) == {"full", "full_nogc_len16"} and len(agreement) == 4
    run = json.loads(out.with_name("rl_step_run.json").read_text())
    assert run["config"]["tiny"] is True and "goals" in run["config"]
    assert "rl: best speedup" in done.stdout
