"""Peak memory and time of one GIFT forward+backward from hidden states (issue 6).

For each size ``N x V x D`` (tokens, vocabulary, hidden width) and each method, fresh
subprocesses build the inputs (hidden and reference hidden ``(N, D)``, LM head ``(V, D)``, fp32,
all tokens trained) and run forward+backward passes, each after one untimed warm-up pass:

- time (one child, the allocator as users run it): the median wall time of ``--repeats`` passes;
- peak memory (another child): the growth of the resident set over one pass. After the inputs
  exist, the child resets the kernel's peak-RSS counter (``echo 5 > /proc/self/clear_refs``,
  Linux >= 4.0), reads the current RSS as the baseline, and at the end reads the peak
  (``VmHWM``): peak - baseline (fallback where the reset is unavailable: ``ru_maxrss`` minus the
  baseline). This child runs with ``MALLOC_MMAP_THRESHOLD_=65536`` so that glibc hands freed
  blocks back to the OS at once (by default it keeps blocks up to 32 MiB in its heap, and RSS
  would count chunk buffers already freed); the time child does not, as that setting makes every
  large allocation page-fault afresh. ``tracemalloc`` does not see torch's allocations, hence
  RSS. CPU only.

Methods: ``official`` (docs/paper.md §2 line by line on full logits: the reference implementation the
issue compares against), ``gift_loss`` (logits by matmul, then ``gift_lite.losses.gift_loss``),
``fused`` (``fused_gift_loss``, once per ``--chunk-sizes``), ``cross_entropy`` (logits +
``F.cross_entropy``, i.e. SFT), and ``matmul_floor``: only the four matmuls no implementation can
avoid (student logits, reference logits, grad_hidden, grad_W), over all tokens at once (empty
chunk_size) and chunk by chunk as ``fused`` does; ratios use the fastest floor. Methods whose
estimated memory exceeds what the machine has free are skipped (status ``skipped``). Timings on a
shared machine move with its load: the run JSON records the load average before and after.

    python benchmarks/bench_loss.py                       # default sizes
    python benchmarks/bench_loss.py --sizes 4096x32000x256 --chunk-sizes 256,1024
    python benchmarks/bench_loss.py --tiny --out scratch/loss.csv   # CI-sized
    python benchmarks/bench_loss.py --precision --sizes 4096x152064x256   # the value vs float64

``--precision`` times nothing: on the same inputs (all on CPU, in this process) it computes the
loss value of ``fused_gift_loss``, of the official formula (fp32, as the official code runs it,
chunk by chunk since each token's loss is its own row), and of ``fused_gift_loss`` with one
``bmm`` per row for ``<target, logits>`` (``ROWDOT_BLOCK = V``, the former code), each against
the official formula evaluated in float64, and writes ``loss_precision.csv``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from gift_lite import losses  # noqa: E402
from memtools import default_out, reset_rss_peak, rss_kib  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

METHODS = ("official", "gift_loss", "fused", "cross_entropy", "matmul_floor")
DEFAULT_SIZES = "4096x32000x256,8192x32000x256,4096x152064x256,8192x152064x256"
TINY_SIZES = "256x512x32"
COLUMNS = ("n_tokens", "vocab", "hidden", "method", "status", "peak_mib", "time_s", "repeats",
           "chunk_size", "threads", "memory_method")
BETA, SMOOTH_LAMBDA = losses.DEFAULT_BETA, 0.0
# Rough peak in [N x V] fp32 tensors, only to skip what cannot fit (ours, from the code paths).
NV_TENSORS = {"official": 11, "gift_loss": 4, "fused": 0, "cross_entropy": 4, "matmul_floor": 2}
TARGET = ((4096, 32000, 256), 1 / 15, 1.3)  # issue 6: size, fused/official peak, fused/floor time
# glibc keeps freed blocks below its (dynamic, up to 32 MiB) mmap threshold in the heap, so RSS
# would count chunk buffers already freed; a fixed 64 KiB threshold returns them to the OS.
MMAP_THRESHOLD = 65536


# -- the methods (each: one forward+backward) -------------------------------------------------
def official(h, ref_h, w, labels):
    """docs/paper.md §2 as the official code writes it, every intermediate kept alive as there."""
    vocab = w.shape[0]
    student_logits = h @ w.T
    with torch.no_grad():
        ref_logits = ref_h @ w.T
        ref_probs = F.softmax(ref_logits, dim=-1)
        mixed_ref_probs = (1 - SMOOTH_LAMBDA) * ref_probs + SMOOTH_LAMBDA * (1.0 / vocab)
        log_p_ref = torch.log(mixed_ref_probs + 1e-10)
        target_logits = log_p_ref.clone()
        gain = torch.tensor(BETA, dtype=target_logits.dtype, device=labels.device).expand(labels.shape[0], 1)
        target_logits.scatter_add_(1, labels.unsqueeze(1), gain)
        target_probs = F.softmax(target_logits, dim=-1)
    student_log_probs = F.log_softmax(student_logits, dim=-1)
    loss_per_token = -torch.sum(target_probs * student_log_probs, dim=-1)
    loss_mask = torch.ones_like(loss_per_token)
    loss = torch.sum(loss_per_token * loss_mask) / (loss_mask.sum() + 1e-8)
    loss.backward()


def gift_from_logits(h, ref_h, w, labels):
    with torch.no_grad():
        ref_logits = ref_h @ w.T
    losses.gift_loss(h @ w.T, ref_logits, labels, beta=BETA).backward()


def fused(h, ref_h, w, labels, chunk_size):
    losses.fused_gift_loss(h, ref_h, w, labels, beta=BETA, chunk_size=chunk_size).backward()


def cross_entropy(h, ref_h, w, labels):
    F.cross_entropy(h @ w.T, labels).backward()


@torch.no_grad()
def matmul_floor(h, ref_h, w, labels, chunk_size=None):
    """The four matmuls, over all tokens at once (``chunk_size=None``) or chunk by chunk."""
    grad_w = torch.zeros_like(w)
    step = chunk_size or h.shape[0]
    for start in range(0, h.shape[0], step):
        h_c = h[start:start + step]
        student = h_c @ w.T
        ref = ref_h[start:start + step] @ w.T
        student @ w  # grad_hidden = g W (the student logits stand in for g = softmax - target)
        grad_w.addmm_(student.T, h_c)  # grad_W += g^T h
        del ref


# -- child: one method, one size ----------------------------------------------------------------
def make_inputs(n: int, vocab: int, dim: int, seed: int, device: str = "cpu", dtype=torch.float32):
    """Hidden ``(N, D)`` (trainable), reference hidden ``(N, D)``, head ``(V, D)`` (trainable) and
    labels ``(N,)``: every token trained. Drawn in fp32 on the CPU, so a seed gives the same
    numbers on every device and dtype."""
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(n, dim, generator=gen)
    ref_h = torch.randn(n, dim, generator=gen)
    w = torch.randn(vocab, dim, generator=gen) / dim ** 0.5
    labels = torch.randint(0, vocab, (n,), generator=gen)
    h, w = (x.to(device=device, dtype=dtype).requires_grad_() for x in (h, w))
    return h, ref_h.to(device=device, dtype=dtype), w, labels.to(device)


def method_fn(method: str, chunk_size: int):
    """The forward+backward pass of ``method`` as ``fn(h, ref_h, w, labels)``."""
    return {"official": official, "gift_loss": gift_from_logits, "cross_entropy": cross_entropy,
            "matmul_floor": lambda *a: matmul_floor(*a, chunk_size or None),
            "fused": lambda *a: fused(*a, chunk_size)}[method]


def run_child(method: str, n: int, vocab: int, dim: int, repeats: int, chunk_size: int,
              seed: int, mode: str) -> dict:
    """``mode="time"``: median of ``repeats`` passes; ``"memory"``: peak RSS growth over two."""
    h, ref_h, w, labels = make_inputs(n, vocab, dim, seed)
    fn = method_fn(method, chunk_size)
    if mode == "memory":
        memory_method = "VmHWM after clear_refs" if reset_rss_peak() else "ru_maxrss"
        baseline_kib = rss_kib("VmRSS") or 0
    times = []
    for i in range((repeats if mode == "time" else 1) + 1):  # the first pass warms up, untimed
        h.grad = w.grad = None
        start = time.perf_counter()
        fn(h, ref_h, w, labels)
        times.append(time.perf_counter() - start)
    if mode == "time":
        return {"time_s": statistics.median(times[1:]), "threads": torch.get_num_threads()}
    peak_kib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss if memory_method == "ru_maxrss"
                else rss_kib("VmHWM") or 0)
    return {"peak_mib": (peak_kib - baseline_kib) / 1024, "memory_method": memory_method}


# -- precision: the loss value against float64 ----------------------------------------------------
PRECISION_COLUMNS = ("n_tokens", "vocab", "hidden", "method", "value", "float64_value", "rel_error")
PRECISION_CHUNK = 256  # tokens per chunk of the official / float64 evaluation (memory, ours)


@torch.no_grad()
def official_value(h, ref_h, w, labels, dtype) -> float:
    """The official formula's mean loss in ``dtype``, chunk by chunk over tokens."""
    total = torch.zeros((), dtype=dtype)
    for start in range(0, h.shape[0], PRECISION_CHUNK):
        rows = slice(start, start + PRECISION_CHUNK)
        student = h[rows].to(dtype) @ w.to(dtype).T
        p = F.softmax(ref_h[rows].to(dtype) @ w.to(dtype).T, dim=-1)
        target_logits = torch.log((1 - SMOOTH_LAMBDA) * p + SMOOTH_LAMBDA / w.shape[0] + 1e-10)
        y = labels[rows].unsqueeze(1)
        target_logits.scatter_add_(1, y, torch.full(y.shape, BETA, dtype=dtype))
        total += -(F.softmax(target_logits, dim=-1) * F.log_softmax(student, dim=-1)).sum()
    return float(total / h.shape[0])


@torch.no_grad()
def precision_rows(size, seed: int) -> list[dict]:
    h, ref_h, w, labels = make_inputs(*size, seed)
    reference = official_value(h, ref_h, w, labels, torch.float64)
    values = {"fused": float(losses.fused_gift_loss(h, ref_h, w, labels, beta=BETA)),
              "official": official_value(h, ref_h, w, labels, torch.float32)}
    block, losses.ROWDOT_BLOCK = losses.ROWDOT_BLOCK, size[1]
    try:
        values["fused_single_bmm"] = float(losses.fused_gift_loss(h, ref_h, w, labels, beta=BETA))
    finally:
        losses.ROWDOT_BLOCK = block
    n, vocab, dim = size
    return [{"n_tokens": n, "vocab": vocab, "hidden": dim, "method": m, "value": v, "float64_value": reference,
             "rel_error": abs(v - reference) / abs(reference)} for m, v in values.items()]


# -- parent: sizes x methods, each in a fresh process ---------------------------------------------
def parse_sizes(text: str) -> list[tuple[int, int, int]]:
    sizes = []
    for item in text.split(","):
        parts = item.lower().strip().split("x")
        if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"size {item!r} must be NxVxD with positive ints, e.g. 4096x32000x256")
        sizes.append(tuple(int(p) for p in parts))
    return sizes


def available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 2 ** 62


def measure(method: str, size, chunk_size: int, args) -> dict:
    n, vocab, dim = size
    row = {"n_tokens": n, "vocab": vocab, "hidden": dim, "method": method, "repeats": args.repeats,
           "chunk_size": chunk_size}
    need = 4 * (NV_TENSORS[method] * n * vocab + 3 * (n + vocab) * dim)
    if need > 0.8 * available_bytes():
        return {**row, "status": f"skipped: needs ~{need / 2 ** 30:.0f} GiB"}
    result = {**row, "status": "ok"}
    for mode in ("memory", "time"):
        cmd = [sys.executable, __file__, "--child", method, "--child-mode", mode, "--sizes",
               f"{n}x{vocab}x{dim}", "--repeats", str(args.repeats), "--chunk-sizes",
               str(chunk_size or 0), "--seed", str(args.seed), "--threads", str(args.threads)]
        # memory: freed blocks go back to the OS at once; time: the allocator as users run it
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)} if mode == "memory" else None
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                                  check=True, env=env)
        except subprocess.TimeoutExpired:
            return {**row, "status": f"failed: over {args.timeout} s"}
        except subprocess.CalledProcessError as err:
            return {**row, "status": f"failed: exit {err.returncode}: {err.stderr.strip()[-200:]}"}
        result.update(json.loads(done.stdout.strip().splitlines()[-1]))
    return result


def _verdict(ratio: float, limit: float) -> str:
    return "not measured" if ratio != ratio else ("met" if ratio <= limit else "NOT met")


def ratio_lines(frame) -> list[str]:
    """Fused vs official peak, and fused vs the fastest matmul floor, per size and chunk size."""
    lines = []
    for (n, vocab, dim), group in frame.groupby(["n_tokens", "vocab", "hidden"], sort=False):
        ok = group[group["status"] == "ok"]
        by = lambda m: ok[ok["method"] == m]  # noqa: E731
        official_peak = by("official")["peak_mib"].min()
        floor = by("matmul_floor")["time_s"].min()
        for _, row in by("fused").iterrows():
            mem, speed = row["peak_mib"] / official_peak, row["time_s"] / floor
            lines.append(f"{n}x{vocab}x{dim} fused chunk {int(row['chunk_size'])}: peak = {mem:.3f} of "
                         f"official (1/{1 / mem:.1f}); time = {speed:.2f}x the fastest matmul floor, "
                         f"{row['time_s'] / by('gift_loss')['time_s'].min():.2f}x gift_loss")
            if (n, vocab, dim) == TARGET[0]:
                lines.append(f"  issue-6 targets: peak <= 1/15 of official {_verdict(mem, TARGET[1])}; "
                             f"time <= 1.3x matmul floor {_verdict(speed, TARGET[2])}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated NxVxD")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-sizes", default=f"256,{losses.CHUNK_SIZE}",
                        help="comma-separated fused chunk sizes, one fused row each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per child (0: torch's default)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per child process")
    parser.add_argument("--out", default=None,
                        help="CSV path (default: benchmarks/results/loss.csv; with --tiny scratch/bench/loss.csv)")
    parser.add_argument("--tiny", action="store_true",
                        help=f"CI-sized: --sizes {TINY_SIZES} --repeats 1 --chunk-sizes 64")
    parser.add_argument("--precision", action="store_true",
                        help="the loss value vs a float64 reference instead of time and memory")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--child-mode", choices=("time", "memory"), default="time", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.out = args.out or default_out("loss.csv", args.tiny)
    if args.tiny:
        args.sizes, args.repeats, args.chunk_sizes = TINY_SIZES, 1, "64"
    sizes = parse_sizes(args.sizes)
    chunks = [int(c) for c in args.chunk_sizes.split(",") if c]  # 0 (children only): unchunked
    if args.child:
        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(run_child(args.child, *sizes[0], args.repeats, chunks[0], args.seed,
                                   args.child_mode)))
        return 0
    import pandas as pd  # the parent only: children start faster without it
    from tqdm import tqdm

    from gift_lite.results import write_csv, write_run_json

    if args.precision:
        return run_precision(sizes, args, pd, write_csv, write_run_json)

    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"--methods {unknown} not in {METHODS}")
    load_before = os.getloadavg()
    # matmul_floor: all tokens at once (None) and chunked like fused (skipped by --tiny, for CI time)
    variants = {"fused": chunks, "matmul_floor": [None] + ([] if args.tiny else chunks)}
    jobs = [(size, m, c) for size in sizes for m in methods for c in variants.get(m, [None])]
    rows = [measure(m, size, c, args) for size, m, c in tqdm(jobs, disable=args.tiny)]
    frame = pd.DataFrame(rows).reindex(columns=COLUMNS).astype({"chunk_size": "Int64"})
    write_csv(args.out, frame)
    write_run_json(Path(args.out).with_name(Path(args.out).stem + "_run.json"),
                   {"sizes": args.sizes, "methods": methods, "repeats": args.repeats,
                    "chunk_sizes": chunks, "seed": args.seed, "beta": BETA, "threads": args.threads,
                    "load_average_before": load_before, "load_average_after": os.getloadavg()})
    shown = frame.drop(columns=["repeats", "memory_method"]).round({"peak_mib": 1, "time_s": 3})
    print(shown.to_string(index=False))
    print("\n".join(ratio_lines(frame)))
    print(f"load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} cores; wrote {args.out}")
    return 0


def run_precision(sizes, args, pd, write_csv, write_run_json) -> int:
    """``--precision``: one row per (size, method) in ``loss_precision.csv`` beside ``--out``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    frame = pd.DataFrame([row for size in sizes for row in precision_rows(size, args.seed)],
                         columns=PRECISION_COLUMNS)
    out = Path(args.out).with_name("loss_precision.csv")
    write_csv(out, frame)
    write_run_json(out.with_name("loss_precision_run.json"),
                   {"sizes": args.sizes, "seed": args.seed, "beta": BETA, "rowdot_block": losses.ROWDOT_BLOCK,
                    "chunk_size": losses.CHUNK_SIZE, "threads": args.threads})
    print(frame.to_string(index=False, formatters={"rel_error": "{:.1e}".format}))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
