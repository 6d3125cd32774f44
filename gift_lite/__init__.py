"""gift-lite: a Jupyter-first, reproducible companion to GIFT (arXiv 2601.09233).

GIFT fits, per response token, the finite-temperature Gibbs target
``softmax(log p_base + beta * onehot(expert token))`` around a frozen base model;
``beta = inf`` is standard SFT and ``beta = 0`` leaves the base unchanged.
"""

__version__ = "0.1.0"

import os as _os

# Trainers ping the hub with usage telemetry on start-up; a reproduction companion should not.
_os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import logging as _logging

# On CPUs with AVX512-BF16, bitsandbytes tries to fetch an optional NF4 kernel from the hub and
# warns when it cannot; it then uses its built-in kernel, which is what runs here.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
