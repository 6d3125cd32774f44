"""One prepared GPU check: QLoRA GIFT vs SFT memory and speed, the fused loss on CUDA, a GRPO step (issue 16).

Sections, run in this order within a total time budget (``--budget-s``). On a GPU each runs in a
child process of its own, so a crash or a CUDA error in one leaves the others' numbers; every
configuration that fails or does not fit in the budget is a row with its error, not a hole:

- ``loss`` -> ``gpu_loss.csv``: one forward+backward from hidden states at N = 8192 tokens,
  V = 151936, D = 896 and 1536 (the two models' hidden sizes), fp32 and bf16: the official
  formulation, ``gift_loss`` on full logits, ``fused_gift_loss`` and plain cross-entropy (the
  functions of ``bench_loss.py``). Peak memory above the inputs over one pass; median time of
  ``--repeats`` passes after one warm-up pass.
- ``step`` -> ``gpu_step.csv``, per model: ``GIFTTrainer`` with the ``gpu`` preset's initialiser
  settings (``real_settings.GPU_REAL.init`` through ``real.init_config``: micro-batches of one 2048-token
  row, 16 per optimizer step, gradient checkpointing, LoRA r = 16 on every projection, bf16) for
  ``sft``, ``gift_live`` (fused loss, the base's pass every step), ``gift_cached`` (exact reference
  cache) and ``gift_topk`` (top-``--topk`` cache). Step time: the median over the steps after the
  first ``--warmup`` (the caches are built inside step 1, ``cache_build_s``); tokens/s = tokens
  per step / step time; ``step_vs_sft`` and ``peak_vs_sft`` against SFT on the same model, with
  the goals (peak <= SFT + 10 %, live step <= 1.35x SFT) printed beside them.
- ``grpo`` -> ``gpu_grpo.csv``: ``--grpo-steps`` GRPO steps (TRL through ``rl.run_grpo``) with the
  preset's RL settings (``GPU_REAL.rl``: 8 completions per prompt, up to 512 new tokens, 4
  micro-batches of 8 per step) on the 0.5B shape: s/step (median after ``--warmup``) and
  generated tokens/s (tokens counted by the reward function, which scores a length parity).

Models: Qwen2.5-0.5B and Qwen2.5-1.5B shapes written out below from their published configs,
random weights (no hub), saved with a word-level tokenizer of the full 151936-token vocabulary to
a temporary folder, and loaded the way real models load (``models.load_qlora``: NF4 base with
double quantisation + LoRA; bf16 compute on a GPU that has it). Training rows are random words,
one token each, of exactly the preset's length less one (TRL cuts nothing). Random weights give
near-uniform next-token distributions, so GRPO rarely samples EOS: completions run to the limit.

Memory: CUDA ``max_memory_allocated``; ``peak_mib`` counts from before the model was loaded
(weights + training), ``train_peak_mib`` from after the trainer was built. On CPU (``--dry-run``)
the resident set instead (``memtools``): a check that the code runs, not a measurement.

``--dry-run``: CPU, tiny shapes, the same functions, all sections in one child (CI time), output
under ``scratch/gpu_check/``; it refuses to write into ``benchmarks/results/``. Without a GPU and
without ``--dry-run`` the script stops at once. The check never imports papermill or math-verify
(absent on the GPU machine's image): both are blocked in every process of it.

To a GPU machine without network whose image has torch, transformers, peft and accelerate but no
trl, bitsandbytes or datasets (python 3.12): ``gpu_carry.sh`` downloads those wheels (and dill,
multiprocess) into the ignored ``.wheels/``, 9 MB with bitsandbytes cut to its CPU and CUDA 13
libraries, so they travel beside the whole working tree (42 MB tracked, 37 MB of it ``data/``)
within a 64 MiB limit; with ``--full`` (45 MB) leave ``data/`` and ``figures/`` behind: the check
reads no committed file, only ``gift_lite/``, ``benchmarks/`` and ``pyproject.toml``. There
``gpu_run.sh`` installs the wheels with ``pip --no-index --no-deps --target``, prints the versions
that run and any carried package's unmet requirement (``gpu_preflight.py``), and runs this script;
the run JSONs record the versions too. Eight files at most come back from
such a machine: the three CSVs, their run JSONs and a log fit.

    python benchmarks/gpu_check.py                # one GPU: <= 8 min; writes benchmarks/results/gpu_*
    python benchmarks/gpu_check.py --dry-run      # CPU, seconds; writes scratch/gpu_check/
    bash benchmarks/gpu_carry.sh                  # here: the wheels the GPU machine lacks, into .wheels/
    bash benchmarks/gpu_run.sh --out-dir "$OUT"   # there: install them to a target dir, run the check
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub, ever: the GPU machine has no network
NOT_ON_DEVICE = ("papermill", "math_verify")  # absent on the GPU machine: importing them must fail here too
for _name in NOT_ON_DEVICE:
    sys.modules.setdefault(_name, None)  # None in sys.modules: `import` raises, find_spec says absent

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from memtools import memory_now, memory_peak, reset_peak, step_timer  # noqa: E402  (benchmarks/ is on sys.path)

# Qwen2.5 base models' config.json (hub: Qwen/Qwen2.5-0.5B, Qwen/Qwen2.5-1.5B), the fields that
# set memory and time; both tie the LM head to the input embeddings.
QWEN_COMMON = {"vocab_size": 151936, "tie_word_embeddings": True, "rms_norm_eps": 1e-6, "hidden_act": "silu"}
SHAPES = {
    "qwen2.5-0.5b": {**QWEN_COMMON, "hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
                     "num_key_value_heads": 2, "intermediate_size": 4864, "max_position_embeddings": 32768},
    "qwen2.5-1.5b": {**QWEN_COMMON, "hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12,
                     "num_key_value_heads": 2, "intermediate_size": 8960, "max_position_embeddings": 131072},
    # --dry-run: the same architecture (tied head) at CI size
    "tiny": {**QWEN_COMMON, "vocab_size": 512, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 256},
}
GRPO_MODEL = "qwen2.5-0.5b"  # the GRPO step runs on the 0.5B shape
STEP_METHODS = ("sft", "gift_live", "gift_cached", "gift_topk")
LOSS_METHODS = ("official", "gift_loss", "fused", "cross_entropy")
LOSS_SIZES = "8192x151936x896,8192x151936x1536"
LOSS_DTYPES = ("float32", "bfloat16")
GOALS = {"peak_vs_sft": 1.10, "step_vs_sft": {"gift_live": 1.35}}  # issue 16 (from issue 6)
MIN_SECTION_S = 20  # ours: a section is not started with less time left than this
MIN_JOB_S = 5  # ours: nor a configuration inside one
SPECIALS = ("<|pad|>", "<|endoftext|>", "<|unk|>")  # EOS <|endoftext|> as in Qwen2.5; no BOS

LOSS_COLUMNS = ("n_tokens", "vocab", "hidden", "dtype", "method", "chunk_size", "status", "peak_mib", "time_s",
                "peak_vs_official", "time_vs_official", "repeats", "device", "memory_method")
STEP_COLUMNS = ("model", "params_m", "method", "status", "step_s", "tokens_per_s", "peak_mib", "train_peak_mib",
                "step_vs_sft", "peak_vs_sft", "cache_build_s", "train_loss", "load_s", "steps_timed", "seq_len",
                "batch_size", "grad_accum", "tokens_per_step", "gradient_checkpointing", "dtype", "device",
                "memory_method")
GRPO_COLUMNS = ("model", "params_m", "status", "step_s", "generated_tokens_per_s", "completions_per_step",
                "mean_completion_len", "max_completion_length", "num_generations", "batch_size", "grad_accum",
                "prompt_len", "steps_timed", "peak_mib", "device", "memory_method")
KEYS = {"loss": ("n_tokens", "vocab", "hidden", "dtype", "method", "chunk_size"), "step": ("model", "method"),
        "grpo": ("model",)}


# -- what runs: sections and their configurations ---------------------------------------------------
def sections(args) -> list[tuple[str, str | None]]:
    """``(kind, model)`` in run order: the loss, the first model's step, GRPO, the other models."""
    models = ["tiny"] if args.dry_run else [m for m in args.models.split(",") if m]
    wanted = [s for s in args.sections.split(",") if s]
    plan = [("loss", None)] if "loss" in wanted else []
    grpo_model = "tiny" if args.dry_run else GRPO_MODEL
    for i, model in enumerate(models):
        if "step" in wanted:
            plan.append(("step", model))
        if i == 0 and "grpo" in wanted:
            plan.append(("grpo", grpo_model))
    if "grpo" in wanted and not models:
        plan.append(("grpo", grpo_model))
    return plan


def loss_sizes(args) -> list[tuple[int, int, int]]:
    from bench_loss import parse_sizes

    return parse_sizes("256x512x32" if args.dry_run else args.loss_sizes)


def jobs(kind: str, model: str | None, args) -> list[dict]:
    """The key columns of every row a section writes (a row per job, whatever happens)."""
    if kind == "loss":
        from gift_lite.losses import CHUNK_SIZE

        chunk = 64 if args.dry_run else CHUNK_SIZE
        return [{"n_tokens": n, "vocab": v, "hidden": d, "dtype": dtype, "method": method,
                 "chunk_size": chunk if method == "fused" else None}
                for n, v, d in loss_sizes(args) for dtype in LOSS_DTYPES for method in LOSS_METHODS]
    if kind == "step":
        return [{"model": model, "method": method} for method in STEP_METHODS]
    return [{"model": model}]


def settings(args):
    """The ``gpu`` preset's initialiser and RL settings (tiny ones under ``--dry-run``)."""
    from dataclasses import replace

    from gift_lite.models import LoraSettings
    from gift_lite.real_settings import GPU_REAL
    from gift_lite.rl import GRPOSettings

    init, rl, rl_accum = GPU_REAL.init, GPU_REAL.rl, GPU_REAL.rl_gradient_accumulation_steps
    if args.dry_run:
        init = replace(init, max_length=48, gradient_accumulation_steps=2, lora=LoraSettings(r=4, lora_alpha=8))
        rl, rl_accum = GRPOSettings(num_generations=4, per_device_train_batch_size=4, max_completion_length=8,
                                    max_steps=2, learning_rate=1e-5), 1
    init = replace(init, max_steps=args.steps)
    rl = replace(rl, max_steps=args.grpo_steps)
    return replace(GPU_REAL, init=init, rl=rl, rl_gradient_accumulation_steps=rl_accum)


# -- the model: a Qwen2.5 shape with random weights, saved like a hub model -------------------------
def word_tokenizer(vocab_size: int):
    """One token per whitespace-separated word ``t<id>``, ids 3 .. V-1 after the three specials."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab.update({f"t{i}": i for i in range(len(SPECIALS), vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|endoftext|>",
                                   unk_token="<|unk|>", model_max_length=1 << 20)


def words(rng: random.Random, n: int, vocab_size: int) -> str:
    """``n`` random words of ``word_tokenizer``: exactly ``n`` tokens."""
    return " ".join(f"t{rng.randrange(len(SPECIALS), vocab_size)}" for _ in range(n))


def model_dir(work: Path, name: str, seed: int) -> Path:
    """``work/<name>``: the random model (bf16 on a bf16 GPU) and its tokenizer; built once, reused."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from gift_lite.real_data import compute_dtype
    from gift_lite.world import set_special_tokens

    folder = work / name
    if (folder / "parameters.txt").exists():  # written last: a folder a killed child left half-saved is rebuilt
        return folder
    shape = SHAPES[name]
    tokenizer = word_tokenizer(shape["vocab_size"])
    device = "cuda" if torch.cuda.is_available() else "cpu"  # random init of 1.5 B weights is quicker there
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(Qwen2Config(**shape))
    set_special_tokens(model, tokenizer)
    params = sum(p.numel() for p in model.parameters())  # the tied head counts once
    model.to(compute_dtype()).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "parameters.txt").write_text(f"{params}\n")  # NF4 packs two weights a byte: count them here
    del model
    free_memory()
    return folder


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load_model(folder: Path, run, seed: int, *, input_grads: bool):
    """NF4 base + fresh LoRA adapters (``models.load_qlora``), as ``real.train_initialiser`` and
    ``real.run_rl_unit`` build them; ``input_grads``: what the initialiser adds for checkpointing
    (TRL's GRPOTrainer does it itself)."""
    from gift_lite.models import load_qlora
    from gift_lite.real_data import compute_dtype, load_tokenizer
    from gift_lite.repro import seed_everything

    seed_everything(seed)  # the LoRA initialisation draws from the global RNG
    model = load_qlora(folder, run.init.lora, dtype=compute_dtype())
    if input_grads and run.init.gradient_checkpointing:
        model.enable_input_require_grads()  # checkpointed LoRA on a frozen NF4 base needs input grads
    return model, load_tokenizer(str(folder))


def parameter_millions(folder: Path) -> float:
    """The base's parameter count, in millions, as ``model_dir`` counted it before saving."""
    return int((folder / "parameters.txt").read_text()) / 1e6


# -- section: the loss from hidden states ---------------------------------------------------------
def loss_job(job: dict, args) -> dict:
    """One method at one size and dtype: peak memory over one pass, median time of ``--repeats``."""
    import torch

    from bench_loss import make_inputs, method_fn

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, job["dtype"])
    h, ref_h, w, labels = make_inputs(job["n_tokens"], job["vocab"], job["hidden"], args.seed, device, dtype)
    fn = method_fn(job["method"], job["chunk_size"])

    def one_pass() -> float:
        h.grad = w.grad = None
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn(h, ref_h, w, labels)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    one_pass()  # warm-up: kernels, allocator
    h.grad = w.grad = None
    memory = reset_peak()
    baseline = memory_now(memory)
    one_pass()
    peak = (memory_peak(memory) - baseline) / 2 ** 20
    times = [one_pass() for _ in range(args.repeats)]
    return {"peak_mib": peak, "time_s": statistics.median(times), "repeats": args.repeats, "device": device,
            "memory_method": memory}


def loss_section(model, args, work: Path, deadline: float):
    for job in jobs("loss", None, args):
        yield run_job(job, lambda: loss_job(job, args), deadline)


# -- section: one GIFTTrainer configuration per method -------------------------------------------------
def sft_rows(n: int, length: int, prompt_len: int, vocab_size: int, seed: int) -> list[dict]:
    """Prompt–completion rows of ``length`` tokens with the EOS TRL appends (one below max_length)."""
    rng = random.Random(seed)
    completion_len = length - 1 - prompt_len
    if completion_len < 1:
        raise ValueError(f"prompt_len={prompt_len} leaves no completion in rows of {length} tokens")
    # TRL tokenises prompt + completion as one string: the space keeps the two boundary words apart
    return [{"prompt": words(rng, prompt_len, vocab_size), "completion": " " + words(rng, completion_len, vocab_size)}
            for _ in range(n)]


def step_job(folder: Path, method: str, args, work: Path) -> dict:
    """Train ``--steps`` optimizer steps of one method; returns the row's measured columns."""
    from dataclasses import replace

    import torch
    from datasets import Dataset
    from transformers import PrinterCallback

    from gift_lite.real import init_config
    from gift_lite.real_data import compute_dtype
    from gift_lite.trainer import GIFTTrainer

    run = settings(args)
    run = replace(run, method="sft" if method == "sft" else "gift")
    init = run.init
    memory = reset_peak()
    before_load = memory_now(memory)
    start = time.perf_counter()
    model, tokenizer = load_model(folder, run, args.seed, input_grads=True)
    n_rows = init.per_device_train_batch_size * init.gradient_accumulation_steps * args.steps
    prompt_len = min(args.prompt_len, init.max_length // 4)
    rows = sft_rows(n_rows, init.max_length - 1, prompt_len, model.config.vocab_size, args.seed)
    with tempfile.TemporaryDirectory(dir=work) as scratch:
        cache = {}
        if method in ("gift_cached", "gift_topk"):
            cache["reference_cache"] = str(Path(scratch) / "cache")
        if method == "gift_topk":
            cache["reference_cache_topk"] = min(args.topk, model.config.vocab_size)
        config = init_config(run, str(Path(scratch) / "out"), args.seed, **cache)
        trainer = GIFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                              processing_class=tokenizer)
        trainer.remove_callback(PrinterCallback)
        timer = step_timer()
        trainer.add_callback(timer)
        load_s = time.perf_counter() - start
        memory = reset_peak()
        after_build = memory_now(memory)
        trainer.train()
        peak = memory_peak(memory)
    timed = timer.times[args.warmup:] or timer.times
    step_s = statistics.median(timed)
    seq_len = len(trainer.train_dataset[0]["input_ids"])
    tokens = init.per_device_train_batch_size * init.gradient_accumulation_steps * seq_len
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    row = {"params_m": parameter_millions(folder), "step_s": step_s, "tokens_per_s": tokens / step_s,
           "peak_mib": (peak - before_load) / 2 ** 20, "train_peak_mib": (peak - after_build) / 2 ** 20,
           "cache_build_s": trainer.ref_cache_build_s, "train_loss": sum(losses) / max(len(losses), 1),
           "load_s": load_s, "steps_timed": len(timed), "seq_len": seq_len,
           "batch_size": init.per_device_train_batch_size, "grad_accum": init.gradient_accumulation_steps,
           "tokens_per_step": tokens, "gradient_checkpointing": init.gradient_checkpointing,
           "dtype": str(compute_dtype()).replace("torch.", ""),
           "device": "cuda" if torch.cuda.is_available() else "cpu", "memory_method": memory}
    del trainer, model
    return row


def step_section(model: str, args, work: Path, deadline: float):
    folder = model_dir(work, model, args.seed)
    for job in jobs("step", model, args):
        yield run_job(job, lambda: step_job(folder, job["method"], args, work), deadline)


# -- section: GRPO steps on the 0.5B shape -----------------------------------------------------------
def grpo_job(folder: Path, args, work: Path) -> dict:
    """``--grpo-steps`` GRPO steps from fresh adapters (as ``real.run_rl_unit`` for ``rl_only``)."""
    import torch
    from datasets import Dataset

    from gift_lite.rl import grpo_config, run_grpo

    run = settings(args)
    rl, accum = run.rl, run.rl_gradient_accumulation_steps
    memory = reset_peak()
    before_load = memory_now(memory)
    policy, tokenizer = load_model(folder, run, args.seed, input_grads=False)
    completions_per_step = rl.per_device_train_batch_size * accum
    rng = random.Random(args.seed)
    prompt_len = 8 if args.dry_run else args.rl_prompt_len
    n_prompts = completions_per_step // rl.num_generations * rl.max_steps
    prompts = Dataset.from_list([{"prompt": words(rng, prompt_len, policy.config.vocab_size)}
                                 for _ in range(n_prompts)])
    generated: list[tuple[int, int]] = []  # (completions, new tokens) per reward call: one per generation batch

    def length_parity_reward(completions, completion_ids=None, **_):
        """Counts the generated tokens; the reward only needs to vary within a group."""
        ids = completion_ids if completion_ids is not None else tokenizer(completions)["input_ids"]
        generated.append((len(ids), sum(len(x) for x in ids)))
        return [float(len(x) % 2) for x in ids]

    timer = step_timer()
    with tempfile.TemporaryDirectory(dir=work) as scratch:
        config = grpo_config(rl, scratch, seed=args.seed, disable_tqdm=True, gradient_accumulation_steps=accum,
                             use_cpu=not torch.cuda.is_available())
        run_grpo(policy.train(), tokenizer, prompts, length_parity_reward, config, callbacks=[timer])
        peak = memory_peak(memory)
    timed = timer.times[args.warmup:] or timer.times
    # one generation batch per optimizer step (TRL's steps_per_generation = gradient accumulation)
    per_step = len(generated) == len(timer.times)
    tokens = sum(n for _, n in (generated[args.warmup:] if per_step else generated))
    seconds = sum(timed) if per_step else sum(timer.times)
    row = {"params_m": parameter_millions(folder), "step_s": statistics.median(timed),
           "generated_tokens_per_s": tokens / seconds, "completions_per_step": completions_per_step,
           "mean_completion_len": sum(n for _, n in generated) / sum(c for c, _ in generated),
           "max_completion_length": rl.max_completion_length, "num_generations": rl.num_generations,
           "batch_size": rl.per_device_train_batch_size, "grad_accum": accum, "prompt_len": prompt_len,
           "steps_timed": len(timed), "peak_mib": (peak - before_load) / 2 ** 20,
           "device": "cuda" if torch.cuda.is_available() else "cpu", "memory_method": memory}
    del policy
    return row


def grpo_section(model: str, args, work: Path, deadline: float):
    folder = model_dir(work, model, args.seed)
    yield run_job({"model": model}, lambda: grpo_job(folder, args, work), deadline)


SECTIONS = {"loss": loss_section, "step": step_section, "grpo": grpo_section}


# -- the child: run sections, append each row to a JSON-lines file as soon as it exists ----------------
def failed(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"failed: {type(err).__name__}: {text[:300]}"


def run_job(job: dict, work, deadline: float) -> dict:
    """``{**job, **work(), "status": "ok"}``, or the job with its failure (or budget) status."""
    if deadline - time.time() < MIN_JOB_S:
        return {**job, "status": "skipped: time budget"}
    try:
        return {**job, **work(), "status": "ok"}
    except Exception as err:  # noqa: BLE001 - recorded in the table; the other jobs go on
        return {**job, "status": failed(err)}
    finally:
        free_memory()


def run_child(plan: list[tuple[str, str | None]], args) -> None:
    import torch

    if args.dry_run:  # CI's small shared CPU: threads beyond the free cores only spin-wait
        torch.set_num_threads(1)
    out = Path(args.work_dir) / "rows.jsonl"

    def write(record: dict) -> None:
        with out.open("a") as f:
            f.write(json.dumps(record, default=float) + "\n")

    write({"kind": "meta", "settings": settings_record(args)})
    for kind, model in plan:
        done = set()
        try:
            for row in SECTIONS[kind](model, args, Path(args.work_dir), args.deadline):
                write({"kind": kind, **row})
                done.add(key(kind, row))
        except Exception as err:  # noqa: BLE001 - e.g. the model could not be built: every job fails with it
            for job in jobs(kind, model, args):
                if key(kind, job) not in done:
                    write({"kind": kind, **job, "status": failed(err)})
    write({"kind": "meta", "loaded_not_on_device": sorted(n for n in NOT_ON_DEVICE if sys.modules.get(n))})


def settings_record(args) -> dict:
    from dataclasses import asdict

    import torch

    run = settings(args)
    return {"init": asdict(run.init), "rl": asdict(run.rl), "rl_gradient_accumulation_steps":
            run.rl_gradient_accumulation_steps, "beta": run.beta, "torch_cuda": torch.version.cuda,
            "gpu_memory_gib": (torch.cuda.get_device_properties(0).total_memory / 2 ** 30
                               if torch.cuda.is_available() else None)}


def key(kind: str, row: dict) -> tuple:
    return tuple(row.get(k) for k in KEYS[kind])


# -- the parent: children within the budget, then the tables --------------------------------------------
def child_command(plan, args, work: Path, deadline: float) -> list[str]:
    spec = ";".join(f"{kind}:{model or ''}" for kind, model in plan)
    cmd = [sys.executable, __file__, "--child", spec, "--work-dir", str(work), "--deadline", str(deadline)]
    for name in ("models", "sections", "loss_sizes", "steps", "grpo_steps", "warmup", "repeats", "topk",
                 "prompt_len", "rl_prompt_len", "seed"):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return cmd + (["--dry-run"] if args.dry_run else [])


def run_children(args, work: Path, deadline: float) -> tuple[list[dict], list[dict], dict]:
    """Rows of every job of every section (filled in for a child that died), meta records, seconds."""
    plan = sections(args)
    groups = [plan] if args.dry_run else [[s] for s in plan]  # dry run: one child (CI time)
    records, seconds = [], {}
    for group in groups:
        name = ",".join(f"{k}:{m}" if m else k for k, m in group)
        rows_file = work / "rows.jsonl"
        rows_file.unlink(missing_ok=True)
        left = deadline - time.time()
        status = None
        start = time.time()
        if left < MIN_SECTION_S:
            status = "skipped: time budget"
        else:
            print(f"[gpu_check] {name}: start, {left:.0f} s of the budget left", file=sys.stderr, flush=True)
            log = work / "child.log"
            with log.open("w") as err:
                try:
                    done = subprocess.run(child_command(group, args, work, deadline), stdout=err, stderr=err,
                                          timeout=left, cwd=ROOT)
                    if done.returncode:
                        status = f"failed: child exit {done.returncode}: {tail(log, 1)[-300:]}"
                except subprocess.TimeoutExpired:
                    status = f"failed: killed at the time budget ({args.budget_s} s)"
            if status or not args.dry_run:  # on a GPU its log too: that run may be the only one
                print(f"--- {name}: {status or 'ok'}; its log:\n{tail(log, 400 if status else 60)}",
                      file=sys.stderr, flush=True)
        seconds[name] = round(time.time() - start, 1)
        got = [json.loads(line) for line in rows_file.read_text().splitlines()] if rows_file.exists() else []
        records += got
        seen = {(r["kind"], key(r["kind"], r)) for r in got if r["kind"] != "meta"}
        for kind, model in group:  # jobs the child never reported
            for job in jobs(kind, model, args):
                if (kind, key(kind, job)) not in seen:
                    records.append({"kind": kind, **job, "status": status or "failed: no result from the child"})
    rows = [r for r in records if r["kind"] != "meta"]
    return rows, [r for r in records if r["kind"] == "meta"], seconds


def tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])[-20000:]


# kind -> (columns that name a comparison group, the method compared against, {column: ratio column})
RATIOS = {"step": (["model"], "sft", {"step_s": "step_vs_sft", "peak_mib": "peak_vs_sft"}),
          "loss": (["n_tokens", "vocab", "hidden", "dtype"], "official",
                   {"peak_mib": "peak_vs_official", "time_s": "time_vs_official"})}


def with_ratios(kind: str, frame):
    """``step``: step time and peak vs SFT on the same model; ``loss``: vs the official formulation."""
    import pandas as pd

    if kind not in RATIOS:
        return frame
    group_by, base, ratios = RATIOS[kind]
    out = []
    for _, group in frame.groupby(group_by, sort=False, dropna=False):
        group = group.copy()
        ok = group["status"] == "ok"
        ref = group[ok & (group["method"] == base)]
        for column, name in ratios.items():
            group[name] = float("nan")
            if not ref.empty and column in group:
                group.loc[ok, name] = group.loc[ok, column] / float(ref[column].iloc[0])
        out.append(group)
    return pd.concat(out, ignore_index=True)


def goal_lines(steps, cuda: bool) -> list[str]:
    """The issue's goals beside the measured ratios (judged on CUDA only)."""
    lines = []
    ok = steps[(steps["status"] == "ok") & (steps["method"] != "sft")] if not steps.empty else steps
    for _, row in ok.iterrows():
        parts = [f"step {row['step_vs_sft']:.2f}x SFT", f"peak {row['peak_vs_sft']:.2f}x SFT"]
        if cuda:
            limit = GOALS["step_vs_sft"].get(row["method"])
            if limit:
                parts[0] += f" (goal <= {limit}: {'met' if row['step_vs_sft'] <= limit else 'NOT met'})"
            parts[1] += f" (goal <= {GOALS['peak_vs_sft']}: " + (
                "met)" if row["peak_vs_sft"] <= GOALS["peak_vs_sft"] else "NOT met)")
        lines.append(f"{row['model']} {row['method']}: " + "; ".join(parts))
    if not cuda:
        lines.append("(CPU dry run: goals are judged on CUDA only)")
    return lines


def check_out_dir(args, parser) -> Path:
    out = Path(args.out_dir or (ROOT / "scratch" / "gpu_check" if args.dry_run else ROOT / "benchmarks" / "results"))
    committed = (ROOT / "benchmarks" / "results").resolve()
    if args.dry_run and (out.resolve() == committed or committed in out.resolve().parents):
        parser.error(f"--out-dir {out} holds committed results; a --dry-run writes elsewhere")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, seconds; writes scratch/gpu_check/")
    parser.add_argument("--out-dir", help="default: benchmarks/results (GPU), scratch/gpu_check (dry run)")
    parser.add_argument("--budget-s", type=float, default=420, help="total wall-time budget of all sections")
    parser.add_argument("--models", default="qwen2.5-0.5b,qwen2.5-1.5b", help=f"of {sorted(SHAPES)}")
    parser.add_argument("--sections", default="loss,step,grpo")
    parser.add_argument("--loss-sizes", default=LOSS_SIZES, help="comma-separated NxVxD")
    parser.add_argument("--steps", type=int, default=3, help="GIFTTrainer optimizer steps per method")
    parser.add_argument("--grpo-steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1, help="first steps left out of the timing")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per loss method")
    parser.add_argument("--topk", type=int, default=64, help="K of gift_topk")
    parser.add_argument("--prompt-len", type=int, default=256, help="prompt tokens of an SFT row")
    parser.add_argument("--rl-prompt-len", type=int, default=128, help="prompt tokens of a GRPO prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("steps", "grpo_steps", "repeats", "topk", "prompt_len", "rl_prompt_len"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 1")
    if not 0 <= args.warmup < min(args.steps, args.grpo_steps):
        parser.error(f"--warmup={args.warmup} must be >= 0 and below --steps and --grpo-steps")
    unknown = sorted({m for m in args.models.split(",") if m} - set(SHAPES)) + sorted(
        {s for s in args.sections.split(",") if s} - set(SECTIONS))
    if unknown:
        parser.error(f"unknown --models/--sections {unknown}; models: {sorted(SHAPES)}, sections: {sorted(SECTIONS)}")
    if args.child:
        plan = [(kind, model or None) for kind, _, model in (s.partition(":") for s in args.child.split(";"))]
        run_child(plan, args)
        return 0

    out_dir = check_out_dir(args, parser)
    try:
        from bench_loss import parse_sizes

        parse_sizes(args.loss_sizes)  # a bad --loss-sizes fails here, not in a child
    except ValueError as err:
        parser.error(f"--loss-sizes: {err}")
    import pandas as pd
    import torch

    from gift_lite.results import write_csv, write_run_json

    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        parser.error("no CUDA GPU here: run with --dry-run (CPU, tiny shapes) or on a GPU machine")
    start = time.time()
    deadline = start + args.budget_s
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        rows, meta, seconds = run_children(args, Path(work), deadline)
    info = {k: v for m in meta for k, v in m.items() if k != "kind"}
    config = {"dry_run": args.dry_run, "budget_s": args.budget_s, "wall_s": round(time.time() - start, 1),
              "section_wall_s": seconds, "goals": GOALS, "shapes": {m: SHAPES[m] for m in
                                                                    {r.get("model") for r in rows} if m},
              "loss_sizes": ",".join("x".join(map(str, size)) for size in loss_sizes(args)),
              **{k: getattr(args, k) for k in ("steps", "grpo_steps", "warmup", "repeats", "topk", "prompt_len",
                                               "rl_prompt_len", "seed")}, **info}
    frames = {}
    for kind, columns in (("loss", LOSS_COLUMNS), ("step", STEP_COLUMNS), ("grpo", GRPO_COLUMNS)):
        frame = pd.DataFrame([{k: v for k, v in r.items() if k != "kind"} for r in rows if r["kind"] == kind])
        if frame.empty:
            continue
        frames[kind] = with_ratios(kind, frame).reindex(columns=columns)
        if kind == "loss":
            frames[kind] = frames[kind].astype({"chunk_size": "Int64"})
        path = out_dir / f"gpu_{kind}.csv"
        write_csv(path, frames[kind])
        write_run_json(path.with_name(f"gpu_{kind}_run.json"), {"section": kind, **config})
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        for kind, frame in frames.items():
            print(f"\n== gpu_{kind}.csv")
            print(frame.drop(columns=["memory_method"]).round(4).to_string(index=False))
    if "step" in frames:
        print("\n" + "\n".join(goal_lines(frames["step"], cuda)))
    print(f"\nwall time {config['wall_s']} s of a {args.budget_s:.0f} s budget; wrote {out_dir}/gpu_*.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
