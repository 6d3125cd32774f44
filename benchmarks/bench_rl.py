"""Speed of one GRPO step and of the evaluation on the miniature, lever by lever (issue 12).

RL rows time TRL's ``GRPOTrainer`` on the committed ``mini`` world and base
(``data/mini/base``), 16 prompts x 8 samples = 128 completions per optimizer update in every
row, so seconds per completion compare at the same completions per update. The levers are added
one at a time, in this order:

- ``committed``: the committed ``mini`` RL stage: LoRA r=8, TRL's gradient checkpointing,
  completions of at most 24 tokens;
- ``full``: full fine-tuning (no LoRA wrappers: one matmul per projection instead of three);
- ``full_nogc``: and no gradient checkpointing (it re-runs the forward pass in the backward pass,
  which buys nothing on a 0.8 M-parameter model);
- ``full_nogc_len16``: and at most 16 new tokens: the longest correct completion of this world
  (15 characters) plus EOS. Longer samples cannot be correct; this is a protocol choice;
- ``full_nogc_len16_shared``: and each prompt run through the policy once for its group of 8
  rollouts (``run_grpo(share_prompts=True)``, ``evaluate.generate_sharing_prompts``): the same
  samples up to float rounding, an eighth of the prompt's matrix products;
- ``full_nogc_len16_shared_spg2``: and two optimizer updates per rollout batch (TRL's
  ``steps_per_generation=2``; the paper's batch 128 / mini-batch 64): an algorithm change,
  measured only to show whether it pays;
- ``full_nogc_len16_shared_2threads``: one run on two threads (the units run as two one-thread
  processes).

After them, ``matmul_floor`` (status ``bound``) is not a configuration but a lower bound on
``full_nogc_len16_shared``: the time one thread needs for the step's matrix products alone
(generation, forward, and a backward of twice the forward's), each ``nn.Linear`` of the model
timed at its own shape for the step's token counts (mean prompt tokens + that run's mean
completion length; one prompt pass per group); attention, norms, sampling and the optimizer are
left out. Its ``speedup`` is the most any configuration of this model at 128 completions per
update could reach on one thread. ``matmul_in_step`` (status ``part``) runs
``full_nogc_len16_shared`` once more under torch's profiler and reports the seconds per step spent
in its matrix-product kernels (``MATMUL_OPS``), at the shapes TRL really uses (prompts and
completions padded to the batch's longest): no configuration that keeps TRL's padding is faster.

Eval rows time ``mini.evaluate_policy`` (16 samples of each of the 200 + 200 test problems, then
entropy, KL and top-K overlap on held-out text) on the SFT seed-0 initialiser: ``committed`` (its
LoRA adapter on the base, 32 new tokens, 512 sequences per ``generate`` call), ``merged`` (the same
weights merged into a plain model, as full fine-tuning has them), ``merged_len16``,
``merged_len16_batch1024``, and the last two with each prompt run through the model once for its
16 samples (``merged_len16_shared``, ``merged_len16_shared_batch1024``). In every row the entropy,
KL and top-K overlap share one forward pass of each model (``evaluate.response_token_metrics``).

Each row is a fresh process (one process for all with ``--tiny``; ``--repeats`` times, the configurations taking turns so that a
change of the machine's load hits them alike); step time is the median over the steps after
``--warmup``; a row's figure is the median over repeats; ``speedup`` = the committed row's seconds
per completion / this row's, from the same run. ``--agreement`` also runs the slowest and the
fastest full-fine-tuning RL configuration for a few seeds and writes their reward curves
(``rl_agreement.csv``): the levers must not change what GRPO learns beyond noise.

    python benchmarks/bench_rl.py                 # writes benchmarks/results/rl_step.csv + rl_step_run.json
    python benchmarks/bench_rl.py --agreement     # also rl_agreement.csv
    python benchmarks/bench_rl.py --tiny --out scratch/rl_step.csv   # CI-sized, seconds

``rl_step_run.json`` records the processor (``cpu``): ratios differ between CPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from memtools import default_out, step_timer  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

RL_CONFIGS = {  # name -> levers
    "committed": {"lora": True, "gc": True, "length": 24},
    "full": {"lora": False, "gc": True, "length": 24},
    "full_nogc": {"lora": False, "gc": False, "length": 24},
    "full_nogc_len16": {"lora": False, "gc": False, "length": 16},
    "full_nogc_len16_shared": {"lora": False, "gc": False, "length": 16, "share_prompts": True},
    "full_nogc_len16_shared_spg2": {"lora": False, "gc": False, "length": 16, "share_prompts": True,
                                    "steps_per_generation": 2},
    "full_nogc_len16_shared_2threads": {"lora": False, "gc": False, "length": 16, "share_prompts": True,
                                        "threads": 2},
}
FAST = "full_nogc_len16_shared"  # the fastest one-thread configuration: the floor bounds it
EVAL_CONFIGS = {
    "committed": {"merged": False, "length": 32, "batch": 512},
    "merged": {"merged": True, "length": 32, "batch": 512},
    "merged_len16": {"merged": True, "length": 16, "batch": 512},
    "merged_len16_batch1024": {"merged": True, "length": 16, "batch": 1024},
    "merged_len16_shared": {"merged": True, "length": 16, "batch": 512, "share_prompts": True},
    "merged_len16_shared_batch1024": {"merged": True, "length": 16, "batch": 1024, "share_prompts": True},
}
COLUMNS = ("part", "config", "status", "s_per_step", "s_per_completion", "completions_per_s", "tokens_per_s",
           "speedup", "completions_per_update", "repeats", "threads", "load_avg")
GOALS = {"rl": 3.0, "eval": 2.0}  # issue 12: seconds per completion vs the committed configuration


def _setup(tiny: bool, workdir: Path):
    """The settings, world, base folder and SFT initialiser of the run (tiny: made on the spot)."""
    from gift_lite import mini
    from gift_lite.presets import PRESETS
    from gift_lite.world import build_world

    if not tiny:
        settings = PRESETS["mini"].mini
        return settings, build_world(settings.world), ROOT / "data/mini/base", ROOT / "data/mini/adapters/init/sft_betainf_seed0"
    settings = replace(PRESETS["smoke"].mini, rl=replace(PRESETS["smoke"].mini.rl, per_device_train_batch_size=16))
    world = build_world(settings.world)
    base = workdir / "base"
    if not (base / "config.json").exists():
        mini.ensure_base(world, settings, base)
    adapter = workdir / "sft"
    if not (adapter / "adapter_config.json").exists():
        mini.train_initialiser(world, settings, base, "sft", float("inf"), 0, adapter)
    return settings, world, base, adapter


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def rl_child(name: str, args, profile: bool = False) -> dict:
    """One configuration's GRPO steps; with ``profile``, also the seconds per step that torch's
    profiler counts in the matrix-product kernels (``MATMUL_OPS``), over all steps."""
    import contextlib

    import torch

    from gift_lite import mini
    from gift_lite.repro import seed_everything
    from gift_lite.rl import grpo_config, run_grpo
    from gift_lite.rewards import countdown_reward_func

    levers = RL_CONFIGS[name]
    torch.set_num_threads(levers.get("threads", 1))
    settings, world, base, _ = _setup(args.tiny, Path(args.workdir))
    policy, tokenizer = mini.load_policy(base, trainable=not levers["lora"])
    if levers["lora"]:
        seed_everything(args.seed)
        policy = mini.add_lora(policy, settings.init.lora)
    rl = replace(settings.rl, max_steps=args.warmup + args.steps, gradient_checkpointing=levers["gc"],
                 max_completion_length=levers["length"] if not args.tiny else min(levers["length"], 16))
    timer = step_timer()
    with tempfile.TemporaryDirectory() as scratch:
        config = grpo_config(rl, scratch, seed=args.seed, disable_tqdm=True, use_cpu=True,
                             steps_per_generation=levers.get("steps_per_generation", 1))
        profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if profile \
            else contextlib.nullcontext()
        with profiler:
            trainer = run_grpo(policy.train(), tokenizer, world.rl_dataset(), countdown_reward_func, config,
                               callbacks=[timer], share_prompts=levers.get("share_prompts", False))
    logs = [log for log in trainer.state.log_history if "reward" in log]
    lengths = [log["completions/mean_length"] for log in logs[args.warmup:]]
    step = statistics.median(timer.times[args.warmup:])
    per_update = rl.per_device_train_batch_size
    result = {"s_per_step": step, "s_per_completion": step / per_update, "completions_per_update": per_update,
              "tokens_per_s": statistics.mean(lengths) * per_update / step,
              "completion_len": statistics.mean(lengths), "rewards": [log["reward"] for log in logs],
              "threads": torch.get_num_threads()}
    if profile:  # the profiler slows the step; only its matmul share is reported
        matmul = sum(e.self_cpu_time_total for e in profiler.key_averages() if e.key in MATMUL_OPS) / 1e6
        result = {**result, "s_per_step": matmul / rl.max_steps, "s_per_completion": matmul / rl.max_steps / per_update,
                  "tokens_per_s": None}
    return result


def eval_child(name: str, args) -> dict:
    import torch

    from gift_lite import mini

    levers = EVAL_CONFIGS[name]
    torch.set_num_threads(1)
    settings, world, base, adapter = _setup(args.tiny, Path(args.workdir))
    policy, tokenizer = mini.load_policy(base, adapter)
    base_model = None
    if levers["merged"]:
        policy, base_model = policy.merge_and_unload().eval(), mini.load_policy(base)[0]
    evaluation = replace(settings.eval, max_new_tokens=levers["length"], batch_size=levers["batch"],
                         share_prompts=levers.get("share_prompts", False))
    start = time.perf_counter()
    mini.evaluate_policy(policy, tokenizer, world, evaluation, seed=0, base_model=base_model)
    wall = time.perf_counter() - start
    completions = (len(world.id_test) + len(world.ood_test)) * evaluation.num_samples
    return {"s_per_step": wall, "s_per_completion": wall / completions, "completions_per_update": None,
            "tokens_per_s": None, "threads": 1}


def floor_child(args, completion_len: float) -> dict:
    """The matmul-only lower bound on a full-fine-tuning step (see the module docstring)."""
    import torch

    from gift_lite import mini

    torch.set_num_threads(1)
    settings, world, base, _ = _setup(args.tiny, Path(args.workdir))
    policy, tokenizer = mini.load_policy(base)
    prompts = [len(tokenizer(row["prompt"])["input_ids"]) for row in world.rl_dataset()]
    batch = settings.rl.per_device_train_batch_size
    sequence = statistics.mean(prompts) + completion_len
    shapes = [m.weight.shape for m in policy.modules() if isinstance(m, torch.nn.Linear)]

    def seconds(rows: int) -> float:  # all of the model's projections once, on ``rows`` tokens
        total = 0.0
        for out_features, in_features in shapes:
            x, w = torch.randn(rows, in_features), torch.randn(out_features, in_features)
            torch.nn.functional.linear(x, w)
            start = time.perf_counter()
            for _ in range(5):
                torch.nn.functional.linear(x, w)
            total += (time.perf_counter() - start) / 5
        return total

    train = seconds(round(batch * sequence))
    prompt_pass = seconds(round(batch // settings.rl.num_generations * statistics.mean(prompts)))
    generate = prompt_pass + completion_len * seconds(batch)
    step = 3 * train + generate
    return {"s_per_step": step, "s_per_completion": step / batch, "completions_per_update": batch,
            "tokens_per_s": completion_len * batch / step, "threads": 1}


CHILDREN = {"rl": rl_child, "eval": eval_child, "matmul": lambda name, args: rl_child(name, args, profile=True)}


def cpu_name() -> str:
    """The processor's model name, and whether it has AVX-512 or AMX (they change the matmul rate)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        import platform
        return platform.processor() or "unknown"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    extras = [f for f in ("avx512f", "amx_tile") if f in flags]
    return f"{name} ({', '.join(extras) if extras else 'no AVX-512, no AMX'})"


def run_child(part: str, name: str, args) -> dict:
    """One configuration in a fresh process (in this one with ``--tiny``); a failure becomes a row
    with its status."""
    if args.tiny:
        try:
            return {"status": "ok", **CHILDREN[part](name, args)}
        except Exception as err:  # noqa: BLE001 - the row records it
            return {"status": f"error: {type(err).__name__}: {err}"[:200]}
    cmd = [sys.executable, __file__, "--child", f"{part}:{name}", "--steps", str(args.steps), "--warmup",
           str(args.warmup), "--seed", str(args.seed), "--workdir", args.workdir] + (["--tiny"] if args.tiny else [])
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd=ROOT)
    if done.returncode != 0:
        return {"status": "error: " + (done.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return {"status": "ok", **json.loads(done.stdout.strip().splitlines()[-1])}


def summarise(part: str, name: str, runs: list[dict], committed: float | None) -> dict:
    ok = [r for r in runs if r["status"] == "ok"]
    row = {"part": part, "config": name, "status": "ok" if len(ok) == len(runs) else runs[-1]["status"],
           "repeats": len(ok), "load_avg": round(os.getloadavg()[0], 2)}
    if ok:
        per = statistics.median(r["s_per_completion"] for r in ok)
        tokens = [r["tokens_per_s"] for r in ok if r["tokens_per_s"] is not None]
        row.update(s_per_step=statistics.median(r["s_per_step"] for r in ok), s_per_completion=per,
                   completions_per_s=1 / per, tokens_per_s=statistics.median(tokens) if tokens else None,
                   completions_per_update=ok[0]["completions_per_update"], threads=ok[0]["threads"],
                   speedup=committed / per if committed else None)
    return row


def agreement(args) -> list[dict]:
    """Reward curves of the slowest and the fastest full-fine-tuning configuration, seed by seed."""
    rows = []
    for seed in range(args.agreement_seeds):
        for name in ("full", FAST):
            seeded = argparse.Namespace(**{**vars(args), "seed": seed, "warmup": 0, "steps": args.agreement_steps})
            result = run_child("rl", name, seeded)
            for step, reward in enumerate(result.get("rewards", []), start=1):
                rows.append({"config": name, "seed": seed, "step": step, "reward": reward})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rl-configs", default=",".join(RL_CONFIGS))
    parser.add_argument("--eval-configs", default=",".join(EVAL_CONFIGS))
    parser.add_argument("--steps", type=int, default=8, help="timed GRPO steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the median")
    parser.add_argument("--repeats", type=int, default=2, help="runs per configuration, taking turns")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--agreement", action="store_true", help="also write rl_agreement.csv")
    parser.add_argument("--agreement-seeds", type=int, default=3)
    parser.add_argument("--agreement-steps", type=int, default=40)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per child process")
    parser.add_argument("--out", default=None,
                        help="CSV path (default: benchmarks/results/rl_step.csv; with --tiny scratch/bench/rl_step.csv)")
    parser.add_argument("--workdir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--tiny", action="store_true", help="CI size: a smoke world and base made on the spot")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.out = args.out or default_out("rl_step.csv", args.tiny)
    for name in ("steps", "repeats", "agreement_seeds", "agreement_steps"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')}={getattr(args, name)} must be at least 1")
    if args.child:
        part, name = args.child.split(":")
        result = CHILDREN[part](name, args)
        print(json.dumps(result))
        return 0
    from gift_lite.results import write_csv, write_run_json
    import pandas as pd

    parts = [("rl", n) for n in args.rl_configs.split(",") if n] + [("eval", n) for n in args.eval_configs.split(",") if n]
    unknown = [n for p, n in parts if n not in (RL_CONFIGS if p == "rl" else EVAL_CONFIGS)]
    if unknown:
        raise SystemExit(f"unknown configurations {unknown}; known: rl {list(RL_CONFIGS)}, eval {list(EVAL_CONFIGS)}")
    with tempfile.TemporaryDirectory() as workdir:
        args.workdir = args.workdir or workdir
        if args.tiny:  # make the tiny base and initialiser once, outside the timed children
            _setup(True, Path(args.workdir))
        load_before = os.getloadavg()
        runs: dict[tuple[str, str], list[dict]] = {p: [] for p in parts}
        for _ in range(args.repeats):
            for part in parts:
                runs[part].append(run_child(*part, args))
        rows = []
        for part in ("rl", "eval"):
            base = summarise(part, "committed", runs[(part, "committed")], None) if (part, "committed") in runs else {}
            for p in [p for p in parts if p[0] == part]:
                rows.append(summarise(*p, runs[p], base.get("s_per_completion")))
            fast = [r for r in runs.get(("rl", FAST), []) if r["status"] == "ok"]
            if part == "rl" and fast:
                length = statistics.median(r["completion_len"] for r in fast)
                floor = summarise("rl", "matmul_floor", [{"status": "ok", **floor_child(args, length)}],
                                  base.get("s_per_completion"))
                rows.append({**floor, "status": "bound"})
                inside = summarise("rl", "matmul_in_step", [run_child("matmul", FAST, args)],
                                   base.get("s_per_completion"))
                rows.append({**inside, "status": "part" if inside["status"] == "ok" else inside["status"]})
        agree = agreement(args) if args.agreement else []
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    write_csv(args.out, frame)
    if agree:
        write_csv(Path(args.out).with_name("rl_agreement.csv"), pd.DataFrame(agree))
    write_run_json(Path(args.out).with_name(Path(args.out).stem + "_run.json"),
                   {**{k: v for k, v in vars(args).items() if k not in ("child", "workdir")},
                    "out": os.path.relpath(args.out, ROOT) if Path(args.out).resolve().is_relative_to(ROOT) else args.out,
                    "load_avg_before": load_before, "load_avg_after": os.getloadavg(), "goals": GOALS,
                    "cpu": cpu_name()})
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for part, goal in GOALS.items():
        best = frame[(frame["part"] == part) & frame["speedup"].notna() & (frame["status"] == "ok")]
        if len(best):
            print(f"{part}: best speedup {best['speedup'].max():.2f}x (goal {goal:g}x)")
    bound = frame[frame["status"] == "bound"]
    if len(bound):
        print(f"rl: the matmul floor allows at most {bound['speedup'].iloc[0]:.2f}x on one thread")
    inside = frame[frame["status"] == "part"]
    if len(inside):
        print(f"rl: the matrix products inside the {FAST} step take {inside['s_per_step'].iloc[0]:.3f} s/step "
              f"(at most {inside['speedup'].iloc[0]:.2f}x if all else took no time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
