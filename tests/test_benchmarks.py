"""The benchmarks run end to end at CI size and write well-formed CSVs (the GPU check: its CPU dry run)."""

import json
import math
import os
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


def test_bench_real_tiny_writes_csv_and_run_json(tmp_path):
    out = tmp_path / "real.csv"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_real.py"), "--tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    frame = pd.read_csv(out)
    assert set(zip(frame["kind"], frame["config"])) == {("step", "sft"), ("step", "gift_live"), ("step", "gift_cached"),
                                                         ("generate", "plain"), ("generate", "shared_prompts"),
                                                         ("quality", "mean_p_gold")}
    assert (frame["status"] == "ok").all() and (frame["seconds"] > 0).all()
    assert (frame.loc[frame["kind"] != "quality", "tokens_per_s"] > 0).all()
    run = json.loads(out.with_name("real_run.json").read_text())
    assert run["config"]["tiny"] is True and run["config"]["model_source"] == "random stand-in"
    assert "step time gift_live / sft" in done.stdout and "shared prompts" in done.stdout
    assert 0 < frame.set_index("kind").loc["quality", "mean_p_gold"] < 1


def test_bench_real_tiny_arith_generation(tmp_path):
    """``--arith-generation``: each regime's paths, their ratios to today's path, and the same samples."""
    out = tmp_path / "real_generate.csv"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_real.py"), "--tiny", "--arith-generation",
                           "--with-static", "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    frame = pd.read_csv(out).set_index("config")
    assert list(frame.index) == [f"{r}/{p}" for r in ("eval_base", "eval_primed", "grpo_base")
                                 for p in ("shared_prompts", "shared_drop_finished", "static_cache", "static_compiled")]
    assert (frame["tokens_per_s"] > 0).all() and (frame["same_as_generate"] == 1.0).all()
    compiled = frame.index.str.endswith("/static_compiled")
    assert (frame.loc[compiled, "first_call_s"] > 0).all() and frame.loc[~compiled, "first_call_s"].isna().all()
    assert (frame.loc[frame.index.str.endswith("/shared_prompts"), "speedup"] == 1.0).all()
    run = json.loads(out.with_name("real_generate_run.json").read_text())
    assert run["config"]["tiny"] is True and "load_average_after" in run["config"]
    assert "x today's path's useful tokens/s" in done.stdout


def test_bench_real_refuses_a_bad_count(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_real.py"), "--steps", "0",
                           "--out", str(tmp_path / "x.csv")], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2 and "--steps=0 must be >= 1" in done.stderr and not (tmp_path / "x.csv").exists()


RL_SCRIPT = ROOT / "benchmarks" / "bench_rl.py"
RL_COLUMNS = ["part", "config", "status", "s_per_step", "s_per_completion", "completions_per_s", "tokens_per_s",
              "speedup", "completions_per_update", "repeats", "threads", "load_avg"]


def test_bench_rl_tiny_writes_csv_and_run_json(tmp_path):
    out = tmp_path / "rl_step.csv"
    done = subprocess.run([sys.executable, str(RL_SCRIPT), "--tiny", "--out", str(out), "--rl-configs",
                           "committed,full_nogc_len16_shared", "--eval-configs", "committed,merged_len16_shared", "--steps", "2",
                           "--warmup", "1", "--repeats", "1", "--agreement", "--agreement-seeds", "1",
                           "--agreement-steps", "2"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    frame = pd.read_csv(out)
    assert list(frame.columns) == RL_COLUMNS
    assert frame["status"].tolist() == ["ok", "ok", "bound", "part", "ok", "ok"], frame["status"].tolist()
    assert list(zip(frame["part"], frame["config"])) == [("rl", "committed"), ("rl", "full_nogc_len16_shared"),
                                                         ("rl", "matmul_floor"), ("rl", "matmul_in_step"),
                                                         ("eval", "committed"), ("eval", "merged_len16_shared")]
    seconds = frame.set_index("config")["s_per_step"]
    assert 0 < seconds["matmul_floor"] < seconds["full_nogc_len16_shared"]  # bounds below what they bound
    assert 0 < seconds["matmul_in_step"] < seconds["full_nogc_len16_shared"]
    assert (frame["s_per_completion"] > 0).all() and frame["speedup"].notna().all()
    assert frame.loc[frame["config"] == "committed", "speedup"].tolist() == [1.0, 1.0]
    assert (frame.loc[frame["part"] == "rl", "completions_per_update"] == 16).all()
    agreement = pd.read_csv(tmp_path / "rl_agreement.csv")
    assert set(agreement["config"]) == {"full", "full_nogc_len16_shared"} and len(agreement) == 4
    run = json.loads(out.with_name("rl_step_run.json").read_text())
    assert run["config"]["tiny"] is True and "goals" in run["config"] and run["config"]["cpu"]
    assert "rl: best speedup" in done.stdout and "matmul floor" in done.stdout and "inside the" in done.stdout


GPU_SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
GPU_COLUMNS = {
    "loss": ["n_tokens", "vocab", "hidden", "dtype", "method", "chunk_size", "status", "peak_mib", "time_s",
             "peak_vs_official", "time_vs_official", "repeats", "device", "memory_method"],
    "step": ["model", "params_m", "method", "status", "step_s", "tokens_per_s", "peak_mib", "train_peak_mib",
             "step_vs_sft", "peak_vs_sft", "cache_build_s", "train_loss", "load_s", "steps_timed", "seq_len",
             "batch_size", "grad_accum", "tokens_per_step", "gradient_checkpointing", "dtype", "device",
             "memory_method"],
    "grpo": ["model", "params_m", "status", "step_s", "generated_tokens_per_s", "completions_per_step",
             "mean_completion_len", "max_completion_length", "num_generations", "batch_size", "grad_accum",
             "prompt_len", "steps_timed", "peak_mib", "device", "memory_method"],
}
GPU_FINITE = {"loss": ["peak_mib", "time_s"], "step": ["step_s", "tokens_per_s", "peak_mib", "train_loss"],
              "grpo": ["step_s", "generated_tokens_per_s", "mean_completion_len", "peak_mib"]}


def _finite(frame, columns):
    for column in columns:
        assert all(math.isfinite(v) for v in frame[column]), (column, frame[column].tolist())


def test_gpu_check_dry_run_writes_every_section(tmp_path):
    """The GPU check's code path on CPU at tiny shapes: every section runs and writes its CSV."""
    done = subprocess.run([sys.executable, str(GPU_SCRIPT), "--dry-run", "--out-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    frames = {kind: pd.read_csv(tmp_path / f"gpu_{kind}.csv") for kind in GPU_COLUMNS}
    for kind, frame in frames.items():
        assert list(frame.columns) == GPU_COLUMNS[kind]
        assert (frame["status"] == "ok").all(), (kind, frame["status"].tolist())
        _finite(frame, GPU_FINITE[kind])
        run = json.loads((tmp_path / f"gpu_{kind}_run.json").read_text())
        assert run["config"]["dry_run"] is True and run["config"]["section"] == kind
        assert run["config"]["loaded_not_on_device"] == []  # no papermill, no math-verify
        assert "transformers" in run["versions"] and "device" in run
    loss, step, grpo = frames["loss"], frames["step"], frames["grpo"]
    assert set(loss["method"]) == {"official", "gift_loss", "fused", "cross_entropy"}
    assert set(loss["dtype"]) == {"float32", "bfloat16"} and (loss["time_s"] > 0).all()
    assert set(step["method"]) == {"sft", "gift_live", "gift_cached", "gift_topk"}
    assert (step["step_s"] > 0).all() and (step["tokens_per_step"] == step["seq_len"] * step["grad_accum"]).all()
    assert (step["seq_len"] == 47).all()  # the dry run's max_length 48, less one: TRL cut nothing
    assert step.loc[step["method"] == "sft", "step_vs_sft"].tolist() == [1.0]
    _finite(step, ["step_vs_sft", "peak_vs_sft"])
    assert step.loc[step["method"].isin(["gift_cached", "gift_topk"]), "cache_build_s"].gt(0).all()
    assert (grpo["generated_tokens_per_s"] > 0).all() and (grpo["mean_completion_len"] <= 8).all()
    assert "goals are judged on CUDA only" in done.stdout


def test_gpu_check_refuses_committed_results_and_bad_input(tmp_path):
    committed = ROOT / "benchmarks" / "results"
    before = sorted(p.name for p in committed.iterdir())
    done = subprocess.run([sys.executable, str(GPU_SCRIPT), "--dry-run", "--out-dir", str(committed)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2 and "holds committed results" in done.stderr
    assert sorted(p.name for p in committed.iterdir()) == before
    done = subprocess.run([sys.executable, str(GPU_SCRIPT), "--dry-run", "--models", "qwen9b"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2 and "qwen9b" in done.stderr


def test_gpu_run_says_when_the_wheels_are_missing(tmp_path):
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_run.sh"), "--dry-run"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env={**os.environ, "WHEELS": str(tmp_path / "none")})
    assert done.returncode == 1 and "run benchmarks/gpu_carry.sh first" in done.stderr


def test_gpu_preflight_names_an_unmet_requirement(monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_preflight

    assert gpu_preflight.unmet("datasets") == []  # this environment installs datasets' own needs
    real_version = gpu_preflight.version
    monkeypatch.setattr(gpu_preflight, "version", lambda name: "1.0" if name == "pyarrow" else real_version(name))
    assert any(line.startswith("warning: datasets needs pyarrow") and line.endswith("found 1.0")
               for line in gpu_preflight.unmet("datasets"))


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


def test_tiny_runs_without_out_write_under_scratch_and_change_no_tracked_file():
    """A CI-sized run that forgets --out must not overwrite the committed benchmarks/results/."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from memtools import default_out

    assert default_out("x.csv", True) == str(ROOT / "scratch" / "bench" / "x.csv")
    assert default_out("x.csv", False) == str(ROOT / "benchmarks" / "results" / "x.csv")
    tracked = lambda: subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,  # noqa: E731
                                     capture_output=True, text=True, check=True).stdout
    before = tracked()
    for script, name in (("bench_loss.py", "loss.csv"), ("bench_real.py", "real.csv")):
        out = ROOT / "scratch" / "bench" / name
        out.unlink(missing_ok=True)
        done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--tiny"], capture_output=True,
                              text=True, timeout=300, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-2000:]
        assert out.exists(), script
    assert tracked() == before
