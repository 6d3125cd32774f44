"""Memory and step-time readings shared by the benchmark scripts.

CPU: the process's resident set from Linux /proc (``VmRSS`` now, ``VmHWM`` the peak since
``reset_rss_peak``). CUDA: torch's allocator (``memory_allocated`` / ``max_memory_allocated``).
torch and transformers are imported inside the functions, so a parent process that only reads
/proc starts fast.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path


def rss_kib(field: str) -> int | None:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in KiB, from /proc/self/status."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_rss_peak() -> bool:
    """Reset the kernel's peak-RSS counter (``VmHWM``); False where /proc does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# -- one interface for CUDA and CPU: reset the peak, then read "now" and "peak" in bytes --------
def reset_peak() -> str:
    """Start a new peak; returns the memory method (the ``memory_method`` column)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return "cuda max_memory_allocated"
    return "VmHWM after clear_refs" if reset_rss_peak() else "ru_maxrss"


def memory_now(method: str) -> float:
    """Bytes in use now: CUDA allocated, or the resident set."""
    import torch

    if method.startswith("cuda"):
        return float(torch.cuda.memory_allocated())
    return float((rss_kib("VmRSS") or 0) * 1024)


def memory_peak(method: str) -> float:
    """Bytes at the peak since ``reset_peak`` (``ru_maxrss``: since the process started)."""
    import torch

    if method.startswith("cuda"):
        torch.cuda.synchronize()
        return float(torch.cuda.max_memory_allocated())
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss if method == "ru_maxrss" else rss_kib("VmHWM")
    return float((kib or 0) * 1024)


def step_timer():
    """A ``TrainerCallback`` whose ``times`` list gets the wall time of every optimizer step
    (``on_step_begin`` → ``on_step_end``; CUDA synchronised at both ends)."""
    import torch
    from transformers import TrainerCallback

    cuda = torch.cuda.is_available()

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.start = [], None

        def on_step_begin(self, *_, **__):
            if cuda:
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__):
            if cuda:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.start)

    return StepTimer()


def train_measured(trainer) -> tuple[list[float], float, str]:
    """``trainer.train()`` with a step timer and the memory peak: (seconds of each optimizer step,
    peak growth in MiB over the memory in use before training, the memory method)."""
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    timer = step_timer()
    trainer.add_callback(timer)
    memory_method = reset_peak()
    baseline = memory_now(memory_method)
    trainer.train()
    return timer.times, (memory_peak(memory_method) - baseline) / 2 ** 20, memory_method


def default_out(name: str, tiny: bool) -> str:
    """Where a benchmark writes when ``--out`` is not given: ``benchmarks/results/<name>`` for a
    full run, ``scratch/bench/<name>`` for a ``--tiny`` (CI-sized) one, so that a smoke run never
    overwrites committed results."""
    root = Path(__file__).resolve().parent.parent
    return str(root / ("scratch/bench" if tiny else "benchmarks/results") / name)
