"""Let accelerate 1.15 run FSDP on CPU processes (tests only, never imported by the library).

``AcceleratorState.__init__`` switches to ``DistributedType.FSDP`` only when the process type is
one of the GPU-like ``MULTI_*`` types; for ``MULTI_CPU`` it keeps plain data parallelism and drops
the FSDP plugin without a word, so an FSDP run on CPU silently becomes DDP. ``enable()`` wraps the
method to do, for ``MULTI_CPU`` with an FSDP plugin (or ``ACCELERATE_USE_FSDP=true``), what the GPU
branch does: set the type, hand the plugin the mixed precision, keep the plugin. FSDP2 itself runs
on CPU tensors over gloo.
"""

import functools
import os

import accelerate
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

PINNED = "1.15."  # the branch this mirrors is accelerate 1.15's; check it again before moving on


def enable() -> None:
    if not accelerate.__version__.startswith(PINNED):
        raise RuntimeError(f"tests/cpu_fsdp.py mirrors accelerate {PINNED}x, found {accelerate.__version__}")
    original = AcceleratorState.__init__
    if getattr(original, "_cpu_fsdp", False):
        return

    @functools.wraps(original)
    def __init__(self, *args, fsdp_plugin=None, **kwargs):
        fresh = not self._shared_state  # an already initialised state is shared, not rebuilt
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        wanted = fsdp_plugin is not None or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
        if fresh and wanted and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            if self._mixed_precision != "no" and fsdp_plugin is not None:
                fsdp_plugin.set_mixed_precision(self._mixed_precision)
            self.fsdp_plugin = fsdp_plugin
            PartialState._shared_state["distributed_type"] = self.distributed_type

    __init__._cpu_fsdp = True
    AcceleratorState.__init__ = __init__


if __name__ == "__main__":  # `python tests/cpu_fsdp.py MODULE ARGS...`: run MODULE as `-m` would, FSDP enabled
    import runpy
    import sys

    enable()
    module, sys.argv = sys.argv[1], [sys.argv[1], *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
