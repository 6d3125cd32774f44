"""Settings of a real-model run: what a unit depends on, the presets (smoke, CPU, GPU) and
notebook 06's parameters (``configure``). Nothing here loads a model or data.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from gift_lite import smollm2
from gift_lite.evaluate import EvalSettings
from gift_lite.losses import DEFAULT_BETA, LOSSES
from gift_lite.models import LoraSettings
from gift_lite.params import Param, check_parameters
from gift_lite.repro import repo_root
from gift_lite.rl import GRPOSettings

INF = float("inf")
# Fields that may differ between the units of one run folder: the unit key, and checkpointing.
PER_UNIT_FIELDS = ("method", "beta", "seeds", "save_steps", "init_runs", "rl_runs", "rl_seeds")
MIN_FREE_MB = 1024  # ours: free disk a run's folder needs (adapters; checkpoints with optimizer states)
TINY_MODEL = "tiny-local"  # settings.model value: build the CPU stand-in instead of loading a hub model
SAMPLES = "data/samples"
REWARD_NAMES = ("math", "arith")  # real_data.REWARDS


@dataclass(frozen=True)
class RealInitSettings:
    """The SFT/GIFT stage on a real model (paper: full fine-tuning of 7-8B models on 8 GPUs)."""

    learning_rate: float = 1e-4  # ours: LoRA needs a larger step than the paper's 1e-5 full fine-tuning
    num_train_epochs: float = 1.0  # ours (paper: 10 epochs, the best chosen by held-out loss)
    max_steps: int = -1  # -1: the epochs decide
    per_device_train_batch_size: int = 1  # ours: one long sequence per micro-batch
    gradient_accumulation_steps: int = 16  # ours: 16 sequences per step (paper: 128)
    max_length: int = 2048  # ours (paper: 8192); longer rows are dropped, never truncated
    lr_scheduler_type: str = "constant"  # paper: constant, no warm-up
    weight_decay: float = 0.01  # official SFT script
    adam_beta2: float = 0.95  # official SFT script
    max_grad_norm: float = 1.0  # official SFT script
    gradient_checkpointing: bool = True  # ours: activations of 2k-token sequences on a 16 GB card
    lora: LoraSettings = LoraSettings()  # r=16, alpha=32 on all projections (models.py)


@dataclass(frozen=True)
class RealSelection:
    """The budgets a protocol chooses before its grid (``real.run_selection``): SFT's epochs on
    held-out expert text, GRPO's steps on RL only's validation curve (as the miniature chooses them)."""

    validation_data: str  # prompts of the RL-only validation curve, disjoint from every other split
    max_epochs: int = 4  # ours: SFT trained this long, held-out NLL after each epoch
    rl_max_steps: int = 40  # ours: RL only trained this long, validated every ``curve_every`` steps
    curve_every: int = 5
    curve_samples: int = 4  # samples per validation prompt at the rollout temperature


# What the selection stage chooses: left out of the selection folder's settings guard.
SELECTED_FIELDS = ("init.num_train_epochs", "rl.max_steps")


@dataclass(frozen=True)
class RealSettings:
    """Everything a real-model run depends on; one instance per preset (``REAL_PRESETS``)."""

    model: str = "Qwen/Qwen2.5-0.5B"  # base (not instruct), the paper's Qwen2.5 family at 1/14 the size
    four_bit: bool = True  # QLoRA: NF4 base + LoRA adapters
    sft_data: str = "deepmath"  # DeepMath-103K with DeepSeek-R1 solutions (paper)
    n_sft: int | None = 1000  # ours (paper: 10k)
    rl_data: str = "deepmath"
    n_rl: int | None = 512  # ours (paper: 10k)
    rl_offset: int | None = None  # None: start after the SFT slice, so SFT and RL prompts are disjoint
    id_benchmarks: tuple[str, ...] = ("gsm8k", "math500", "olympiadbench", "aime24", "aime25")  # paper
    ood_benchmarks: tuple[str, ...] = ("gpqa", "mmlu_pro", "arc_challenge")  # paper, less MMLU-Redux
    n_eval: int | None = 64  # ours: problems per benchmark (paper: all)
    method: str = "gift"  # loss_type of the initialiser ("sft" is "gift" at beta = inf)
    beta: float = DEFAULT_BETA  # official default 20
    smooth_lambda: float = 0.0  # official default
    chat_template: bool = True  # official: prompts through the tokenizer's chat template when it has one
    init: RealInitSettings = RealInitSettings()
    eval: EvalSettings = EvalSettings(num_samples=4, ks=(1, 2, 4), temperature=0.6, max_new_tokens=1024,
                                      batch_size=64)  # paper: 4 samples at T = 0.6 (max 8192 tokens)
    rl: GRPOSettings = GRPOSettings(per_device_train_batch_size=8, max_completion_length=512, max_steps=50,
                                    learning_rate=1e-5)  # group 8, T 1.0, clip 0.2, no KL (paper); the rest ours
    rl_gradient_accumulation_steps: int = 4  # ours: 32 completions (4 prompts x 8) per step (paper: 128 x 8)
    save_steps: int = 25  # ours: a Trainer checkpoint every this many optimizer steps; a killed unit resumes there
    seeds: tuple[int, ...] = (0,)
    # A grid of units (the CPU run's protocol); empty: the one (method, beta) above, for every seed.
    init_runs: tuple[tuple[str, float], ...] = ()  # (method, beta) of each initialiser
    rl_runs: tuple[tuple[str, float], ...] = ()  # (method, beta) of each GRPO start
    rl_seeds: tuple[int, ...] | None = None  # None: every seed in ``seeds``
    n_expert_eval: int = 0  # SFT rows after the training slice, held out for entropy / KL / top-K overlap
    reward: str = "math"  # grader of evaluation and GRPO: "math" (the paper's boxed answer) or "arith" (arith.py)
    folder: str | None = None  # the run's folder under data/ (None: real_<model>)
    select: RealSelection | None = None  # a selection stage before the grid (None: budgets fixed by hand)

    def __post_init__(self):
        if self.reward not in REWARD_NAMES:
            raise ValueError(f"reward={self.reward!r} is not one of {REWARD_NAMES}")

    def init_units(self) -> list[tuple[str, float, int]]:
        """(method, beta, seed) of every initialiser unit; beta is inf for every method but gift."""
        runs = self.init_runs or ((self.method, self.beta),)
        return [(m, b if m == "gift" else INF, s) for s in self.seeds for m, b in runs]

    def rl_units(self) -> list[tuple[str, float, int]]:
        runs = self.rl_runs or ((self.method, self.beta),)
        seeds = self.seeds if self.rl_seeds is None else self.rl_seeds
        return [(m, b if m == "gift" else INF, s) for s in seeds for m, b in runs]

    def config_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=str))


SMOKE_REAL = RealSettings(
    model=TINY_MODEL, four_bit=True, n_expert_eval=2, init_runs=(("sft", INF), ("gift", DEFAULT_BETA)),
    rl_runs=(("sft", INF), ("gift", DEFAULT_BETA)),
    sft_data=f"{SAMPLES}/math_sft.jsonl", n_sft=6, rl_data=f"{SAMPLES}/math_rl.jsonl", n_rl=None,
    id_benchmarks=(f"{SAMPLES}/math_eval.jsonl",), ood_benchmarks=(f"{SAMPLES}/choice_eval.jsonl",), n_eval=None,
    init=RealInitSettings(learning_rate=1e-3, max_steps=4, per_device_train_batch_size=4,
                          gradient_accumulation_steps=1, max_length=512, gradient_checkpointing=False,
                          lora=LoraSettings(r=4, lora_alpha=8)),
    eval=EvalSettings(num_samples=2, ks=(1, 2), temperature=0.6, max_new_tokens=24, batch_size=64),
    rl=GRPOSettings(num_generations=4, per_device_train_batch_size=8, max_completion_length=24, max_steps=2,
                    learning_rate=1e-3),
    rl_gradient_accumulation_steps=1, save_steps=2)

GPU_REAL = RealSettings()

# A real model on the 2-core CPU (data/real_smollm2-135m-instruct/PROTOCOL.md fixes every value
# below and says why): SmolLM2-135M-Instruct from its PyPI package, GSM-Symbolic rows generated
# once by gift_lite.gsm_symbolic. Sized so that a fresh recompute fits in about 3 hours.
GSM = "data/gsm_symbolic"
CPU_BETA_STAR = 2.4  # suggest_beta on the base's expert-token probabilities of the 128 SFT rows (notebook 06 checks)
CPU_REAL = RealSettings(
    model=smollm2.FOLDER, four_bit=False,  # fp32 LoRA: NF4 on top of Q4_1 weights cost 0.15 nats/token (PROTOCOL.md)
    sft_data=f"{GSM}/sft.jsonl", n_sft=128, rl_data=f"{GSM}/rl.jsonl", n_rl=64,
    id_benchmarks=(f"{GSM}/test_id.jsonl",), ood_benchmarks=(f"{GSM}/test_ood.jsonl",), n_eval=16,
    method="gift", beta=CPU_BETA_STAR, n_expert_eval=24,
    init=RealInitSettings(learning_rate=2e-4, num_train_epochs=1.0, per_device_train_batch_size=4,
                          gradient_accumulation_steps=2, max_length=512, gradient_checkpointing=False),
    eval=EvalSettings(num_samples=8, ks=(1, 2, 4, 8), temperature=0.6, max_new_tokens=192, batch_size=64,
                      share_prompts=True),
    rl=GRPOSettings(per_device_train_batch_size=8, max_completion_length=160, max_steps=12, learning_rate=7e-5,
                    lr_scheduler_type="constant", gradient_checkpointing=False,
                    share_prompts=True),  # lr, schedule: PROTOCOL.md §4 (amended before any GRPO unit)
    rl_gradient_accumulation_steps=4, save_steps=2, seeds=(0, 1),
    init_runs=(("sft", INF), ("gift", CPU_BETA_STAR), ("gift", DEFAULT_BETA), ("gift", 1.0)),
    rl_runs=(("sft", INF), ("gift", CPU_BETA_STAR)), rl_seeds=(0,))

# The second real-model protocol (data/real_arith/PROTOCOL.md fixes every value below and says why):
# the same model on arithmetic with headroom (gift_lite.arith), graded by arith.arith_reward. The
# values marked "selection" are chosen by its selection stage (real_selection.py) before the grid.
ARITH = "data/arith"
ARITH_BETA_STAR = 2.1  # selection: suggest_beta on the base's expert-token probabilities (units/beta), 2 s.f.
ARITH_REAL = replace(
    CPU_REAL, folder="real_arith", reward="arith",
    sft_data=f"{ARITH}/sft.jsonl", n_sft=128, n_expert_eval=32, rl_data=f"{ARITH}/rl.jsonl", n_rl=None,
    id_benchmarks=(f"{ARITH}/test_id.jsonl",), ood_benchmarks=(f"{ARITH}/test_products.jsonl",
                                                              f"{ARITH}/test_letters.jsonl"), n_eval=None,
    beta=ARITH_BETA_STAR,
    # epochs: selection (units/sft_select: held-out NLL fell at every epoch, 1.074 -> 0.055, so the
    # rule took the last, 4, the edge of the protocol's range)
    init=replace(CPU_REAL.init, num_train_epochs=4.0, max_length=256),
    eval=EvalSettings(num_samples=4, ks=(1, 2, 4), temperature=0.6, max_new_tokens=96, batch_size=64,
                      share_prompts=True),
    # max_steps: selection (units/rl_select: RL only's validation pass@1 did not rise over 40 steps,
    # 0.074 at step 0, 0.094 at 5, 0.059 at 40, so the rule took its first point after step 0)
    rl=replace(CPU_REAL.rl, max_completion_length=96, max_steps=5),
    select=RealSelection(validation_data=f"{ARITH}/validation.jsonl"),
    seeds=(0, 1), init_runs=(("sft", INF), ("gift", ARITH_BETA_STAR), ("gift", 8.0)),
    rl_runs=(("rl_only", INF), ("sft", INF), ("gift", ARITH_BETA_STAR), ("gift", 8.0)), rl_seeds=None)

# Which real settings each preset name selects: smoke runs the random stand-in in seconds, mini
# the real small model on the CPU (its units are committed), gpu a Qwen2.5 base on one GPU.
REAL_PRESETS: dict[str, RealSettings] = {"smoke": SMOKE_REAL, "mini": CPU_REAL, "gpu": GPU_REAL, "arith": ARITH_REAL}


# Notebook 06's parameters, the names ``configure`` takes (None: keep the preset's value).
PARAMETERS = {
    "model": Param(str, optional=True), "four_bit": Param(bool, optional=True), "sft_data": Param(str, optional=True),
    "n_sft": Param(int, ge=1, optional=True), "rl_data": Param(str, optional=True),
    "n_rl": Param(int, ge=1, optional=True), "id_benchmarks": Param(str, optional=True),
    "ood_benchmarks": Param(str, optional=True), "n_eval": Param(int, ge=1, optional=True),
    "method": Param(str, choices=tuple(sorted(LOSSES)), optional=True),
    "beta": Param(float, ge=0, allow_inf=True, optional=True),  # 0: the base's own distribution (gift_loss)
    "init_max_steps": Param(int, ge=1, optional=True), "init_max_length": Param(int, ge=2, optional=True),
    "init_learning_rate": Param(float, gt=0, optional=True),
    "rl_max_steps": Param(int, ge=1, optional=True), "rl_max_completion_length": Param(int, ge=1, optional=True),
    "rl_learning_rate": Param(float, gt=0, optional=True),
    "eval_max_new_tokens": Param(int, ge=1, optional=True), "chat_template": Param(bool, optional=True),
    "seed": Param(int, ge=0, optional=True)}


def configure(preset: str, **overrides) -> RealSettings:
    """``REAL_PRESETS[preset]`` with the notebook's flat parameters applied; ``None`` keeps the preset's.

    Each name must be in ``PARAMETERS`` and its value of the kind and range given there (a
    ``ValueError`` lists every bad one). ``init_*``, ``rl_*`` and ``eval_*`` set the nested
    settings (``init_max_steps`` -> ``init.max_steps``) unless the name is a field of
    ``RealSettings`` itself (``rl_data`` is the RL prompts' source); benchmark lists are comma-separated
    strings; ``seed`` sets ``seeds=(seed,)``. A ``method`` or ``beta`` replaces the preset's grid
    of units by that one (method, beta), at the initialiser and at GRPO.
    """
    check_parameters(PARAMETERS, **overrides)
    settings = REAL_PRESETS[preset]
    nested = {"init": {}, "rl": {}, "eval": {}}
    top = {}
    top_fields = {f.name for f in fields(RealSettings)}
    for name, value in overrides.items():
        if value is None:
            continue
        if PARAMETERS[name].kind is float:  # papermill writes 1 for 1.0
            value = float(value)
        prefix, _, rest = name.partition("_")
        if name not in top_fields and prefix in nested:  # rl_data is a field of its own, not rl.data
            nested[prefix][rest] = value
        elif name == "seed":
            top["seeds"] = (value,)
        elif name.endswith("benchmarks"):
            top[name] = tuple(s.strip() for s in value.split(",") if s.strip())
        else:
            top[name] = value
    for prefix, changes in nested.items():
        if changes:
            top[prefix] = replace(getattr(settings, prefix), **changes)
    if "method" in top or "beta" in top:
        one = (top.get("method", settings.method), top.get("beta", settings.beta))
        top.update(init_runs=(one,), rl_runs=(one,))
    if "seeds" in top:
        top["rl_seeds"] = None
    return replace(settings, **top)


def describe(settings: RealSettings) -> str:
    """The settings as aligned ``name = value`` lines (nested settings flattened with a prefix)."""
    lines = []
    for key, value in settings.config_dict().items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for sub, v in items:
            if isinstance(v, dict):  # LoRA settings inside init
                lines += [f"{f'{key}.{sub}.{k}':>34} = {x}" for k, x in v.items()]
            else:
                lines.append(f"{key if sub is None else f'{key}.{sub}':>34} = {v}")
    return "\n".join(lines)


def run_name(settings: RealSettings) -> str:
    """Folder name under data/: ``settings.folder``, else ``real_<model>`` (``real_qwen2.5-0.5b``)."""
    return settings.folder or "real_" + settings.model.rstrip("/").split("/")[-1].lower()


def resolve_source(source: str) -> str:
    """A registered dataset name as is; a relative local path against the cwd, else the repo root."""
    path = Path(source).expanduser()
    if path.is_absolute() or path.exists() or not source.endswith((".jsonl", ".json", ".parquet")):
        return source
    return str(repo_root() / source)
