"""Training-step speed and peak memory of SFT vs GIFT (live reference) vs GIFT (cached) (issue 6).

Every run trains ``GIFTTrainer`` for ``--steps`` optimizer steps on fixed-length synthetic rows
(``--batch-size`` rows of one BOS + ``--prompt-len`` + ``--completion-len`` characters + EOS, from
the miniature's character tokenizer), on a randomly initialised ``gift_lite.models.tiny_qwen2``
wrapped with LoRA or QLoRA (``LoraSettings()`` defaults; NF4 through bitsandbytes on CPU or CUDA).
Only the loss settings differ between methods:

- ``sft``: ``loss_type="sft"`` (fused cross-entropy from hidden states: the SFT baseline);
- ``gift_logits``: GIFT on full logits (``fused_loss=False``), live reference: the old path;
- ``gift_live``: GIFT, fused loss, the reference pass live every step (adapter disabled);
- ``gift_cached``: GIFT, fused loss, reference hidden states read from ``reference_cache`` (exact);
- ``gift_topk``: GIFT, fused loss, top-``--topk`` reference log-probs from the cache (approximate).

Models: ``mini`` is ``TinyModelConfig()`` (the miniature's shape, ~0.8 M parameters, vocabulary
32 of which the tokenizer uses 23): the backbone dominates; ``vocab32k`` is the same with vocabulary
32000 and hidden size 256: the LM head dominates. ``--tiny`` (CI) uses a 2-layer width-32 model
and a 512-token vocabulary.

Each (model, adapter, method) runs in a fresh subprocess (one process for all with ``--tiny``),
``--repeats`` times, the configurations taking turns so that a change in the machine's load hits
them alike. Step time: the wall time of each optimizer step (``TrainerCallback``
``on_step_begin`` → ``on_step_end``, CUDA synchronised), median over the steps after the first
``--warmup`` (the cached methods build their cache inside step 1; the build time is its own
column), then the median over repeats (peak memory and build time too). ``tokens/s`` = input
tokens per step / median step time. Peak memory after the model is loaded and the trainer built:
CUDA ``max_memory_allocated`` growth; CPU the resident-set high-water mark growth (``VmHWM`` after
``clear_refs``, as in bench_loss.py; glibc's allocator caching is included, so on CPU compare
methods rather than read absolute numbers). ``topk_tv_max`` (``gift_topk`` rows): the largest
total-variation distance between the exact and the top-K target over the first batch
(``refcache.topk_target_error``); these random models have nearly uniform distributions, the
worst case for a top-K cache. Timings on a shared machine move with its load: the run JSON and
the printout record the load average.

    python benchmarks/bench_step.py                          # mini and vocab32k, LoRA and QLoRA
    python benchmarks/bench_step.py --models vocab32k --adapters lora --methods sft,gift_live
    python benchmarks/bench_step.py --tiny --out scratch/step.csv   # CI-sized
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from memtools import default_out, train_measured  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

METHODS = ("sft", "gift_logits", "gift_live", "gift_cached", "gift_topk")
ADAPTERS = ("lora", "qlora")
MODELS = {  # name -> TinyModelConfig overrides
    "mini": {},
    "vocab32k": {"vocab_size": 32000, "hidden_size": 256},
    "tiny": {"vocab_size": 512, "hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 64},
}
COLUMNS = ("model", "vocab", "hidden", "adapter", "method", "status", "step_s", "tokens_per_s",
           "peak_mib", "cache_build_s", "topk_tv_max", "steps", "repeats", "tokens_per_step", "threads",
           "device", "memory_method")
TARGETS = {"gift_live": 1.35, "gift_cached": 1.05}  # issue 6: step time vs SFT, same run
CUDA_MEMORY_TARGET = 1.10  # issue 6: QLoRA GIFT peak <= SFT peak + 10 % (on CUDA)
BETA = 20.0  # the official default (losses.DEFAULT_BETA)


def method_config(method: str, cache_dir: str, topk: int) -> dict:
    """The ``GIFTConfig`` fields of one method (everything else is shared)."""
    return {"sft": {"loss_type": "sft"},
            "gift_logits": {"loss_type": "gift", "fused_loss": False},
            "gift_live": {"loss_type": "gift"},
            "gift_cached": {"loss_type": "gift", "reference_cache": cache_dir},
            "gift_topk": {"loss_type": "gift", "reference_cache": cache_dir, "reference_cache_topk": topk},
            }[method]


def synthetic_rows(n: int, prompt_len: int, completion_len: int, seed: int) -> list[dict]:
    """Fixed-length prompt–completion rows over the miniature's characters (every batch has the
    same number of tokens)."""
    from gift_lite.world import CHARACTERS

    rng = random.Random(seed)
    draw = lambda k: "".join(rng.choice(CHARACTERS) for _ in range(k))  # noqa: E731
    return [{"prompt": draw(prompt_len), "completion": draw(completion_len)} for _ in range(n)]


# -- child: one (model, adapter, method) ------------------------------------------------------
def run_one(model_name: str, adapter: str, method: str, args) -> dict:
    """Train one configuration; returns one row (without the status)."""
    import torch
    from datasets import Dataset

    from gift_lite.models import LoraSettings, TinyModelConfig, add_lora, load_qlora, tiny_qwen2
    from gift_lite.trainer import GIFTConfig, GIFTTrainer
    from gift_lite.world import build_tokenizer, set_special_tokens

    cuda = torch.cuda.is_available()
    tokenizer = build_tokenizer()
    shape = TinyModelConfig(**MODELS[model_name])
    rows = synthetic_rows(args.rows, args.prompt_len, args.completion_len, args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        model = tiny_qwen2(shape, seed=args.seed)
        set_special_tokens(model, tokenizer)
        torch.manual_seed(args.seed)  # the LoRA initialisation
        if adapter == "qlora":
            model.save_pretrained(Path(scratch) / "base")
            model = load_qlora(Path(scratch) / "base", LoraSettings())
        else:
            model = add_lora(model, LoraSettings())
        topk = min(args.topk, shape.vocab_size)
        config = GIFTConfig(
            output_dir=str(Path(scratch) / "out"), max_steps=args.steps, learning_rate=1e-4,
            per_device_train_batch_size=args.batch_size, logging_steps=max(args.steps, 1), beta=BETA,
            save_strategy="no", report_to=[], disable_tqdm=True, seed=args.seed, use_cpu=not cuda,
            max_length=args.prompt_len + args.completion_len + 2,
            **method_config(method, str(Path(scratch) / "cache"), topk))
        trainer = GIFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                              processing_class=tokenizer)
        times, peak, memory_method = train_measured(trainer)
        tv = float("nan")
        if method == "gift_topk":
            tv = _topk_error(trainer, topk)
    steps = times[args.warmup:] or times
    step_s = statistics.median(steps)
    tokens = args.batch_size * (args.prompt_len + args.completion_len + 2)  # BOS ... EOS
    return {"model": model_name, "vocab": shape.vocab_size, "hidden": shape.hidden_size, "adapter": adapter,
            "method": method, "step_s": step_s, "tokens_per_s": tokens / step_s, "peak_mib": peak,
            "cache_build_s": trainer.ref_cache_build_s, "topk_tv_max": tv, "steps": len(steps),
            "tokens_per_step": tokens, "threads": torch.get_num_threads(),
            "device": "cuda" if cuda else "cpu", "memory_method": memory_method}


def _topk_error(trainer, topk: int) -> float:
    """The largest target TV error of the top-K cache over the first training batch."""
    import torch

    from gift_lite import refcache

    collate = getattr(trainer.data_collator, "collator", trainer.data_collator)
    rows = trainer.train_dataset.select_columns(["input_ids", "labels"])
    first = range(min(len(rows), trainer.args.per_device_train_batch_size))
    batch = trainer._prepare_inputs(collate([rows[i] for i in first]))
    model = trainer.model
    with torch.no_grad(), model.disable_adapter():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    error = refcache.topk_target_error(logits[mask].float(), labels[mask], topk, beta=trainer.args.beta)
    return error["target/tv_max"]


def run_child(configs: list[tuple[str, str, str]], args) -> list[dict]:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    out = []
    for model_name, adapter, method in configs:
        try:
            out.append({**run_one(model_name, adapter, method, args), "status": "ok"})
        except Exception as err:  # noqa: BLE001 - reported in the table, the other runs go on
            out.append({"model": model_name, "adapter": adapter, "method": method,
                        "status": f"failed: {type(err).__name__}: {str(err)[:160]}"})
    return out


# -- parent ---------------------------------------------------------------------------------------
def child_command(configs, args) -> list[str]:
    spec = ";".join(",".join(c) for c in configs)
    return [sys.executable, __file__, "--child", spec, "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--batch-size", str(args.batch_size), "--rows", str(args.rows), "--prompt-len", str(args.prompt_len),
            "--completion-len", str(args.completion_len), "--topk", str(args.topk), "--seed", str(args.seed),
            "--threads", str(args.threads)]


def measure(configs, args) -> list[dict]:
    try:
        done = subprocess.run(child_command(configs, args), capture_output=True, text=True,
                              timeout=args.timeout, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        status = f"failed: over {args.timeout} s"
    except subprocess.CalledProcessError as err:
        status = f"failed: exit {err.returncode}: {err.stderr.strip()[-200:]}"
    return [{"model": m, "adapter": a, "method": me, "status": status} for m, a, me in configs]


def aggregate(runs, configs):
    """One row per configuration: medians over its repeats (a failed repeat fails the row)."""
    import pandas as pd

    keys = ["model", "adapter", "method"]
    out = []
    for config in configs:
        group = runs[(runs[keys] == pd.Series(dict(zip(keys, config)))).all(axis=1)]
        failed = group[group["status"] != "ok"]
        if not failed.empty:
            out.append(failed.iloc[0].to_dict())
            continue
        row = group.iloc[0].to_dict()
        for column in ("step_s", "peak_mib", "cache_build_s", "topk_tv_max"):
            row[column] = group[column].median()
        row["tokens_per_s"] = row["tokens_per_step"] / row["step_s"]
        row["repeats"] = len(group)
        out.append(row)
    return pd.DataFrame(out)


def ratio_lines(frame) -> list[str]:
    """Step time and peak memory of each GIFT method relative to SFT, per model and adapter."""
    lines = []
    ok = frame[frame["status"] == "ok"]
    for (model, adapter), group in ok.groupby(["model", "adapter"], sort=False):
        sft = group[group["method"] == "sft"]
        if sft.empty:
            continue
        sft_time, sft_peak = float(sft["step_s"].iloc[0]), float(sft["peak_mib"].iloc[0])
        parts = []
        for _, row in group[group["method"] != "sft"].iterrows():
            ratio = row["step_s"] / sft_time
            verdict = ""
            if row["method"] in TARGETS:
                verdict = " (target <= {:.2f}: {})".format(
                    TARGETS[row["method"]], "met" if ratio <= TARGETS[row["method"]] else "NOT met")
            parts.append(f"{row['method']} {ratio:.2f}x{verdict}")
            if row["device"] == "cuda" and adapter == "qlora" and row["method"].startswith("gift"):
                mem = row["peak_mib"] / sft_peak
                parts[-1] += " peak {:.2f}x SFT ({})".format(
                    mem, "met" if mem <= CUDA_MEMORY_TARGET else "NOT met")
        lines.append(f"{model} {adapter}: step time vs sft: " + "; ".join(parts))
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mini,vocab32k", help=f"comma-separated, of {sorted(MODELS)}")
    parser.add_argument("--adapters", default=",".join(ADAPTERS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=16, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="first steps left out of the median")
    parser.add_argument("--batch-size", type=int, default=32, help="rows per step (the miniature's)")
    parser.add_argument("--rows", type=int, default=192, help="training rows (epochs = steps x batch / rows)")
    parser.add_argument("--prompt-len", type=int, default=12)
    parser.add_argument("--completion-len", type=int, default=24)
    parser.add_argument("--topk", type=int, default=64, help="K of gift_topk (capped at the vocabulary)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per configuration, taking turns")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (0: torch's default)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per child process")
    parser.add_argument("--out", default=None,
                        help="CSV path (default: benchmarks/results/step.csv; with --tiny scratch/bench/step.csv)")
    parser.add_argument("--tiny", action="store_true",
                        help="CI-sized: --models tiny --steps 3 --warmup 1 --batch-size 4 --rows 8, one process")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.out = args.out or default_out("step.csv", args.tiny)
    if args.tiny:
        args.models, args.steps, args.warmup, args.batch_size, args.rows = "tiny", 3, 1, 4, 8
        args.repeats = 1
        args.prompt_len, args.completion_len, args.topk = 6, 10, 16
    if args.child:
        configs = [tuple(item.split(",")) for item in args.child.split(";")]
        print(json.dumps(run_child(configs, args)))
        return 0
    import pandas as pd  # the parent only
    from tqdm import tqdm

    from gift_lite.results import write_csv, write_run_json

    choices = {"models": (args.models, MODELS), "adapters": (args.adapters, ADAPTERS),
               "methods": (args.methods, METHODS)}
    picked = {}
    for name, (text, allowed) in choices.items():
        picked[name] = [x for x in text.split(",") if x]
        unknown = sorted(set(picked[name]) - set(allowed))
        if unknown:
            parser.error(f"--{name} {unknown} not in {sorted(allowed)}")
    configs = [(m, a, me) for m in picked["models"] for a in picked["adapters"] for me in picked["methods"]]
    load_before = os.getloadavg()
    if args.tiny:  # one process for all: CI time
        rows = measure(configs, args)
    else:
        rows = [r for c in tqdm(configs * args.repeats) for r in measure([c], args)]
    load_after = os.getloadavg()
    frame = aggregate(pd.DataFrame(rows), configs).reindex(columns=COLUMNS)
    write_csv(args.out, frame)
    config = {k: getattr(args, k) for k in ("models", "adapters", "methods", "steps", "warmup", "batch_size", "rows",
                                            "prompt_len", "completion_len", "topk", "repeats", "seed", "threads")}
    write_run_json(Path(args.out).with_name(Path(args.out).stem + "_run.json"),
                   {**config, "beta": BETA, "tiny": args.tiny, "load_average_before": load_before,
                    "load_average_after": load_after})
    shown = frame.drop(columns=["memory_method", "tokens_per_step", "threads", "repeats"]).round(
        {"step_s": 4, "tokens_per_s": 0, "peak_mib": 1, "cache_build_s": 2, "topk_tv_max": 6})
    print(shown.to_string(index=False))
    print("\n".join(ratio_lines(frame)))
    print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} on {os.cpu_count()} cores; "
          f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
