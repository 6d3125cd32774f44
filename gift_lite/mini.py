"""The miniature's protocol: base → initialiser (SFT, GIFT, baselines) → GRPO, with evaluation.

Every unit of work (one method, β and seed at one stage) runs through ``units.py``: it writes its
own rows file and is skipped when that file exists; ``units.collect`` gathers the finished units
into the long-format ``results.csv``.

Every method gets the same data, steps, learning rate and LoRA shape (``InitSettings``), and
every RL run the same ``GRPOSettings``: only the loss differs.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, PrinterCallback

from gift_lite.evaluate import (EvalSettings, evaluate_task, merged_state_dict, response_token_metrics,
                                weight_geometry)
from gift_lite.models import (LoraSettings, TinyModelConfig, add_lora, load_adapter, load_tokenizer,
                              save_adapter)
from gift_lite.repro import seed_everything, tracked_files, without_root
from gift_lite.results import atomic_write, check_writable, long_rows, write_csv
from gift_lite.rewards import countdown_reward_func
from gift_lite.rl import GRPOSettings, ValidationCurve, grpo_config, reward_curve, run_grpo
from gift_lite.trainer import GIFTConfig, GIFTTrainer
from gift_lite.unified import UNIFIED, config_overrides, grpo_parts
from gift_lite.units import (adapter_dir, check_unit_settings, labelled, one_thread, problem_counts,
                             recorded_settings_match, run_pool, unit_key, unit_path, with_added_fields)
from gift_lite.world import PretrainConfig, World, WorldConfig, build_world, expert_solution, pretrain_base

INF = float("inf")


@dataclass(frozen=True)
class InitSettings:
    """The SFT stage, identical for every method (only the loss differs)."""

    num_train_epochs: int = 12  # issue 3 probe: differences appeared after ~12 epochs, not 4 (paper: 10)
    learning_rate: float = 1e-3  # ours: LoRA on a 1 M-parameter model (paper: 1e-5, full fine-tuning)
    per_device_train_batch_size: int = 32  # ours (paper: 128 sequences of up to 8192 tokens)
    lr_scheduler_type: str = "constant"  # paper: constant, no warm-up
    weight_decay: float = 0.01  # official SFT script
    adam_beta2: float = 0.95  # official SFT script (beta1 0.9 is the default)
    max_grad_norm: float = 1.0  # official SFT script
    lora: LoraSettings | None = LoraSettings(r=8, lora_alpha=16)  # ours; None: full fine-tuning (paper)


@dataclass(frozen=True)
class MiniSettings:
    """Everything a miniature run depends on; one instance per preset (presets.py)."""

    world: WorldConfig = WorldConfig()
    model: TinyModelConfig = TinyModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    init: InitSettings = InitSettings()
    eval: EvalSettings = EvalSettings()
    rl: GRPOSettings = GRPOSettings()
    betas: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 20.0, INF)  # GIFT's β grid (notebook 09 shows why)
    baselines: tuple[str, ...] = ("sft_entropy", "dft", "asft", "psft")
    rl_methods: tuple[str, ...] = ("sft", "gift", "sft_entropy", "dft", "asft", "psft", "rl_only")
    seeds: tuple[int, ...] = (0, 1, 2)
    decisive_seeds: tuple[int, ...] = ()  # more seeds for SFT, GIFT at decisive_beta and RL only
    decisive_beta: float | None = None  # the GIFT β the claims are judged at, when fixed in advance
    unified: tuple[str, ...] = ()  # SFT+RL methods run from the base in one stage (unified.py: luffy, relift)
    workers: int = 2  # ours: units run in parallel processes of one thread each (2 cores)

    def init_runs(self) -> list[tuple[str, float]]:
        """(method, β) of every initialiser: SFT, GIFT at each finite β, then the baselines."""
        runs = [("sft", INF)] + [("gift", b) for b in self.betas if b != INF]
        return runs + [(m, INF) for m in self.baselines]

    def rl_runs(self) -> list[tuple[str, float]]:
        """(method, β) of every RL run: each initialiser whose method is in ``rl_methods``, then RL only,
        then the unified methods (from the base)."""
        runs = [(m, b) for m, b in self.init_runs() if m in self.rl_methods]
        return runs + ([("rl_only", INF)] if "rl_only" in self.rl_methods else []) + [(m, INF) for m in self.unified]

    def units(self, stage: str) -> list[tuple[str, float, int]]:
        """(method, β, seed) of every unit of ``stage``: each run over ``seeds``, then the decisive
        runs (SFT, GIFT at ``decisive_beta``, RL only) over ``decisive_seeds``."""
        runs = self.init_runs() if stage == "init" else self.rl_runs()
        decisive = {("sft", INF), ("gift", self.decisive_beta), ("rl_only", INF)}
        return ([(m, b, s) for m, b in runs for s in self.seeds]
                + [(m, b, s) for m, b in runs if (m, b) in decisive for s in self.decisive_seeds])

    @property
    def full_finetune(self) -> bool:
        return self.init.lora is None

    def config_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=str))


def describe(settings: MiniSettings, *, preset: str) -> str:
    """A short, stable summary of a run's settings for a notebook's config cell."""
    w, e, i, r = settings.world, settings.eval, settings.init, settings.rl
    return "\n".join([
        f"preset {preset}; seeds {list(settings.seeds)}",
        f"world: {w.n_sft} SFT / {w.n_rl} RL / {w.n_id_test} ID test / {w.n_ood_test} OOD test problems, "
        f"{w.corpus_size:,} corpus attempts",
        f"base: hidden {settings.model.hidden_size}, {settings.model.num_hidden_layers} layers; "
        f"pretraining {settings.pretrain.max_steps} steps x {settings.pretrain.batch_size}",
        f"initialisers: {[f'{m}' if m != 'gift' else f'gift b={b:g}' for m, b in settings.init_runs()]}",
        f"  {'full fine-tuning' if i.lora is None else f'LoRA r={i.lora.r}'}, {i.num_train_epochs} epochs, "
        f"lr {i.learning_rate:g}, batch {i.per_device_train_batch_size}",
        f"GRPO: {r.max_steps} steps, {r.per_device_train_batch_size // r.num_generations} prompts x "
        f"{r.num_generations} samples, lr {r.learning_rate:g}, for {list(settings.rl_methods)}",
        f"evaluation: {e.num_samples} samples per problem at temperature {e.temperature:g}, k in {list(e.ks)}",
    ])


def reuse_initialisers(src_dir: Path, dst_dir: Path, settings: MiniSettings) -> int:
    """Copy ``src_dir``'s base and initialiser units, with their adapters, into ``dst_dir``.

    For a run that changes only the RL stage (notebook 12): its initialisers would be the same,
    so they are reused, not retrained. Refuses a ``src_dir`` whose settings differ from
    ``settings`` in anything but ``rl``. Each file and adapter folder is copied under a temporary
    name and renamed, adapters before the unit files that mark them done; what ``dst_dir``
    already has is kept. Returns the number of units copied.
    """
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    if not (src_dir / "units" / "settings.json").exists():
        raise ValueError(f"src_dir={str(src_dir)!r} holds no initialiser units yet: run notebooks 08-10 first")
    if not recorded_settings_match(src_dir, settings, ignore=("workers", "rl")):
        raise ValueError(f"src_dir={str(src_dir)!r} holds units made with settings that differ in more than rl")
    for src in sorted(p for p in (src_dir / "adapters" / "init").glob("*") if p.is_dir()):
        dst = dst_dir / "adapters" / "init" / src.name
        if not dst.exists():
            tmp = dst.with_name(f".{dst.name}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(src, tmp)
            tmp.rename(dst)
    copied = 0
    for stage in ("base", "init"):
        for src in sorted((src_dir / "units" / stage).glob("*.csv")):
            dst = dst_dir / "units" / stage / src.name
            if not dst.exists():
                atomic_write(dst, lambda tmp, src=src: shutil.copyfile(src, tmp))
                copied += 1
    return copied


def weights_dir(data_dir: Path, stage: str, key: str, settings: MiniSettings) -> Path:
    """Where a unit's trained policy lives: its LoRA adapter, or (full fine-tuning) its whole model
    under ``weights/``, which git ignores (a few MB a unit; the unit files hold every result)."""
    if settings.full_finetune:
        return Path(data_dir) / "weights" / stage / key
    return adapter_dir(data_dir, stage, key)


# -- the base --------------------------------------------------------------------------------------
def base_is_current(base_dir: Path, settings: MiniSettings) -> bool:
    """True when ``base_dir`` holds a base pretrained with exactly these world/model/pretrain settings."""
    info = Path(base_dir) / "pretrain.json"
    if not (info.exists() and (Path(base_dir) / "model.safetensors").exists()):
        return False
    saved = with_added_fields(json.loads(info.read_text()))
    wanted = json.loads(json.dumps({"world": asdict(settings.world), "model": asdict(settings.model),
                                    "pretrain": asdict(settings.pretrain)}))
    return all(saved.get(k) == v for k, v in wanted.items())


def ensure_base(world: World, settings: MiniSettings, base_dir: Path, *, force: bool = False) -> dict:
    """Pretrain the base into ``base_dir`` unless a current one is there; returns ``pretrain.json``.

    A committed base (git-tracked files in ``base_dir``) is never replaced: not by ``force``, not by
    settings it was not made with (a missing one is rebuilt).
    """
    if force or not base_is_current(base_dir, settings):
        if (Path(base_dir) / "config.json").exists() and tracked_files(base_dir):
            raise ValueError(f"base_dir={without_root(str(base_dir))!r} is a committed base and "
                             f"{'force_pretrain=True' if force else 'these settings differ from its own'} would "
                             "replace it: pretrain into a folder of your own (a scratch preset)")
        check_writable(Path(base_dir).parent)
        pretrain_base(world, settings.model, settings.pretrain, out_dir=base_dir)
    return json.loads((Path(base_dir) / "pretrain.json").read_text())


def load_policy(base_dir: Path, adapter: Path | None = None, *, trainable: bool = False):
    """The base (fp32, eval mode) with an optional adapter on top, and its tokenizer.

    ``adapter`` may also be a whole saved model (full fine-tuning: a folder with ``config.json``
    and no ``adapter_config.json``); it is then loaded in place of the base.
    """
    if adapter is not None and not (Path(adapter) / "adapter_config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(adapter, dtype=torch.float32).requires_grad_(trainable)
        return model.eval(), load_tokenizer(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if adapter is not None:
        model = load_adapter(model, adapter, is_trainable=trainable)
    return model.eval(), load_tokenizer(base_dir)


def save_policy(model, out_dir: Path) -> None:
    """A PEFT model's adapter, or a whole model, through a temporary folder renamed into place."""
    if hasattr(model, "peft_config"):
        save_adapter(model, out_dir)
        return
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)


# -- evaluation -----------------------------------------------------------------------------------
def evaluate_policy(model, tokenizer, world: World, settings: EvalSettings, *, seed: int,
                    base_model=None, counts: list[dict] | None = None) -> list[dict]:
    """pass@k on ID and OOD tests, plus entropy, KL and top-K overlap to the base on held-out text.

    Held-out text: the ID test problems with their expert-style solutions (the SFT distribution).
    ``base_model=None`` with a PEFT model uses the adapter-disabled model as the base. With
    ``settings.n_train_eval`` the first that many RL prompts are scored too (split ``train``).
    ``counts``: a list that receives one ``{split, problem_id, correct}`` row per problem (the
    number of correct samples out of ``settings.num_samples``), for paired statistics.
    """
    splits = [("id", world.id_test), ("ood", world.ood_test)]
    if settings.n_train_eval:
        splits.append(("train", world.rl[:settings.n_train_eval]))
    rows = []
    for split, problems in splits:
        metrics, _, correct = evaluate_task(
            model, tokenizer, problems, num_samples=settings.num_samples, ks=settings.ks,
            temperature=settings.temperature, max_new_tokens=settings.max_new_tokens,
            batch_size=settings.batch_size, seed=seed, progress=False, return_samples=True,
            share_prompts=settings.share_prompts)
        rows += [{"split": split, "metric": m, "value": v} for m, v in metrics.items()]
        if counts is not None:
            counts += problem_counts(problems, correct, split=split)
    prompts = [p.prompt for p in world.id_test]
    completions = [expert_solution(p) for p in world.id_test]
    compare = base_model is not None or hasattr(model, "disable_adapter")
    metrics = response_token_metrics(model, base_model, tokenizer, prompts, completions, compare=compare)
    return rows + [{"split": "", "metric": m, "value": v} for m, v in metrics.items()]


def _geometry_rows(a, b, name: str) -> list[dict]:
    geo = weight_geometry(a, b)
    return [{"split": "", "metric": f"{name}/cosine", "value": geo["cosine"]},
            {"split": "", "metric": f"{name}/l2", "value": geo["l2"]}]


# -- units of work ------------------------------------------------------------------------------------
def load_base(base_dir: Path, settings: MiniSettings):
    """The frozen base to compare a policy with: ``None`` under LoRA (the adapter-disabled model is it)."""
    return load_policy(base_dir)[0] if settings.full_finetune else None


def run_base_unit(world: World, settings: MiniSettings, base_dir: Path, data_dir: Path,
                  ignore: tuple[str, ...] = ("workers",)) -> pd.DataFrame:
    """Evaluate the untouched base once (stage ``base``); cached like every unit. ``ignore``: the
    settings the folder's guard leaves out (``check_unit_settings``)."""
    check_unit_settings(data_dir, settings, ignore)
    path = unit_path(data_dir, "base", "base")
    if path.exists():
        return pd.read_csv(path, keep_default_na=False)
    model, tokenizer = load_policy(base_dir)
    counts = []
    rows = evaluate_policy(model, tokenizer, world, settings.eval, seed=0, base_model=model, counts=counts)
    write_csv(unit_path(data_dir, "base_problems", "base"), labelled(pd.DataFrame(counts), "base", 0.0, 0))
    frame = long_rows(rows, method="base", beta=0.0, seed=0, stage="base")
    write_csv(path, frame)
    return frame


def init_config(settings: MiniSettings, output_dir: str, method: str, beta: float, seed: int,
                init: InitSettings | None = None, **overrides) -> GIFTConfig:
    """The ``GIFTConfig`` of one initialiser (``init`` overrides ``settings.init``, for selection runs)."""
    init = init or settings.init
    kwargs = dict(
        output_dir=output_dir, loss_type=method, beta=beta if method == "gift" else INF, seed=seed,
        num_train_epochs=init.num_train_epochs, learning_rate=init.learning_rate,
        per_device_train_batch_size=init.per_device_train_batch_size,
        lr_scheduler_type=init.lr_scheduler_type, warmup_steps=0, weight_decay=init.weight_decay,
        adam_beta2=init.adam_beta2, max_grad_norm=init.max_grad_norm, logging_steps=10,
        save_strategy="no", report_to=[], max_length=64, disable_tqdm=True,
        use_cpu=not torch.cuda.is_available())
    return GIFTConfig(**{**kwargs, **overrides})


def train_initialiser(world: World, settings: MiniSettings, base_dir: Path, method: str, beta: float,
                      seed: int, out_dir: Path | None, *, init: InitSettings | None = None,
                      eval_split: str | None = None) -> dict:
    """Train one initialiser with ``GIFTTrainer`` (LoRA, or full fine-tuning when ``init.lora`` is
    None); saves it to ``out_dir`` unless that is None.

    ``eval_split``: evaluate the one-hot cross-entropy on that split's expert solutions before
    training (epoch 0) and after every epoch (``eval/loss`` per epoch in the returned ``log``), as
    the paper picks its SFT epoch by held-out loss (only for ``method="sft"``: GIFTTrainer's eval
    loss is the method's own loss).
    """
    init = init or settings.init
    model, tokenizer = load_policy(base_dir, trainable=init.lora is None)
    seed_everything(seed)  # the LoRA initialisation draws from the global RNG
    if init.lora is not None:
        model = add_lora(model, init.lora)
    extra = {"eval_strategy": "epoch", "per_device_eval_batch_size": 256} if eval_split else {}
    with tempfile.TemporaryDirectory() as scratch:
        config = init_config(settings, scratch, method, beta, seed, init, **extra)
        trainer = GIFTTrainer(model=model.train(), args=config, train_dataset=world.sft_dataset(),
                              eval_dataset=world.sft_dataset(eval_split) if eval_split else None,
                              processing_class=tokenizer)
        trainer.remove_callback(PrinterCallback)  # the notebook shows one progress bar over runs
        before = [{"epoch": 0, "eval/loss": trainer.evaluate()["eval_loss"]}] if eval_split else []
        result = trainer.train()
    if out_dir is not None:
        save_policy(model, out_dir)
    log = before + [{"epoch": round(e["epoch"]), "eval/loss": e["eval_loss"]}
                    for e in trainer.state.log_history if "eval_loss" in e and e.get("epoch", 0) > 0]
    return {"train/loss": result.training_loss, "log": log}


def ensure_initialiser(world: World, settings: MiniSettings, base_dir: Path, data_dir: Path, method: str,
                       beta: float, seed: int) -> Path:
    """The trained initialiser's folder, retrained if only its unit file survived.

    Full-fine-tuning weights are not committed (``weights_dir``); training is deterministic for a
    seed on one thread, so a fresh clone retrains what an RL unit needs to the same weights.
    """
    out = weights_dir(data_dir, "init", unit_key(method, beta, seed), settings)
    if not (out / "config.json").exists() and not (out / "adapter_config.json").exists():
        train_initialiser(world, settings, base_dir, method, beta, seed, out)
    return out


def run_init_unit(world: World, settings: MiniSettings, base_dir: Path, data_dir: Path, method: str,
                  beta: float, seed: int) -> pd.DataFrame:
    """Train (or reuse) one initialiser and evaluate it (stage ``init``)."""
    key = unit_key(method, beta, seed)
    path = unit_path(data_dir, "init", key)
    if path.exists():
        return pd.read_csv(path, keep_default_na=False)
    out = weights_dir(data_dir, "init", key, settings)
    stats = train_initialiser(world, settings, base_dir, method, beta, seed, out)
    model, tokenizer = load_policy(base_dir, out)
    base = load_base(base_dir, settings)
    counts = []
    rows = evaluate_policy(model, tokenizer, world, settings.eval, seed=seed, base_model=base, counts=counts)
    write_csv(unit_path(data_dir, "init_problems", key), labelled(pd.DataFrame(counts), method, beta, seed))
    rows.append({"split": "", "metric": "train/loss", "value": stats["train/loss"]})
    start = base.state_dict() if base is not None else _base_state(model)
    rows += _geometry_rows(start, model, "geometry/base_to_init")
    frame = long_rows(rows, method=method, beta=beta, seed=seed, stage="init")
    write_csv(path, frame)
    return frame


def _base_state(model) -> dict[str, torch.Tensor]:
    """The frozen base weights under a PEFT model, without the LoRA tensors."""
    return {k.replace(".base_layer", ""): v for k, v in model.state_dict().items() if "lora_" not in k}


def rl_start(world: World, settings: MiniSettings, base_dir: Path, data_dir: Path, method: str, beta: float,
             seed: int):
    """The trainable policy GRPO starts from, and its tokenizer: the initialiser, or for ``rl_only``
    and the unified methods (LUFFY, ReLIFT) the base (with fresh LoRA adapters under LoRA)."""
    if method not in ("rl_only",) + UNIFIED:
        start = ensure_initialiser(world, settings, base_dir, data_dir, method, beta, seed)
        return load_policy(base_dir, start, trainable=True)
    policy, tokenizer = load_policy(base_dir, trainable=settings.full_finetune)
    if not settings.full_finetune:
        seed_everything(seed)
        policy = add_lora(policy, settings.init.lora)
    return policy, tokenizer


def train_rl(world: World, settings: MiniSettings, policy, tokenizer, seed: int, rl: GRPOSettings | None = None,
             method: str = "grpo"):
    """GRPO on ``world.rl`` (``method`` ``luffy`` or ``relift``: that unified method, with the
    expert solution of every RL prompt); returns the reward curve, the validation curve and its
    per-problem counts (both empty when ``settings.eval.curve_every`` is 0). A ReLIFT run's curve
    has a column ``sft_step``: whether an SFT step followed that RL step."""
    rl = rl or settings.rl
    callbacks = [ValidationCurve(world.val, tokenizer, settings.eval, seed)] if settings.eval.curve_every else []
    parts, overrides = {"reward_func": countdown_reward_func}, {}
    if method in UNIFIED:
        expert_of = {p.prompt: expert_solution(p) for p in world.rl}
        parts = grpo_parts(method, expert_of, tokenizer, countdown_reward_func,
                           buffer_size=rl.per_device_train_batch_size // rl.num_generations)
        overrides = config_overrides(rl)  # their official constant learning rate, unless the preset chose one
    extra = parts.pop("callbacks", [])
    with tempfile.TemporaryDirectory() as scratch:
        config = grpo_config(rl, scratch, seed=seed, disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
                             **overrides)
        trainer = run_grpo(policy.train(), tokenizer, world.rl_dataset(), config=config, callbacks=callbacks + extra,
                           share_prompts=rl.share_prompts, **parts)
    validation = pd.DataFrame(callbacks[0].rows if callbacks else [], columns=["step", "val_pass@1"])
    counts = pd.DataFrame(callbacks[0].counts if callbacks else [], columns=["step", "problem_id", "correct"])
    curve = reward_curve(trainer)
    if method == "relift":
        curve["sft_step"] = curve["step"].isin(extra[0].sft_at)
    return curve, validation, counts


def run_rl_unit(world: World, settings: MiniSettings, base_dir: Path, data_dir: Path, method: str,
                beta: float, seed: int) -> pd.DataFrame:
    """GRPO from one initialiser (``rl_only``: from the base), then evaluate (stage ``rl``).

    Also writes the run's reward curve to ``units/rl_curves/<key>.csv`` and, with
    ``settings.eval.curve_every``, its validation curve to ``units/rl_val/<key>.csv``.
    """
    key = unit_key(method, beta, seed)
    path = unit_path(data_dir, "rl", key)
    if path.exists():
        return pd.read_csv(path, keep_default_na=False)
    policy, tokenizer = rl_start(world, settings, base_dir, data_dir, method, beta, seed)
    start_state = {k: v.clone() for k, v in merged_state_dict(policy).items()}
    curve, validation, val_counts = train_rl(world, settings, policy, tokenizer, seed, method=method)
    if not settings.full_finetune:  # full-model RL weights are not needed by any notebook
        save_policy(policy, adapter_dir(data_dir, "rl", key))
    policy.eval()
    counts = []
    rows = evaluate_policy(policy, tokenizer, world, settings.eval, seed=seed,
                           base_model=load_base(base_dir, settings), counts=counts)
    rows += _geometry_rows(start_state, policy, "geometry/init_to_rl")
    rows.append({"split": "", "metric": "rl/frac_reward_zero_std", "value": float(curve["frac_reward_zero_std"].mean())})
    rows.append({"split": "", "metric": "rl/reward", "value": float(curve["reward"].mean())})
    if "sft_step" in curve:
        rows.append({"split": "", "metric": "rl/sft_steps", "value": float(curve["sft_step"].sum())})
    if len(validation):
        write_csv(unit_path(data_dir, "rl_val", key), labelled(validation, method, beta, seed))
        write_csv(unit_path(data_dir, "rl_val_problems", key), labelled(val_counts, method, beta, seed))
    write_csv(unit_path(data_dir, "rl_problems", key), labelled(pd.DataFrame(counts), method, beta, seed))
    write_csv(unit_path(data_dir, "rl_curves", key), labelled(curve, method, beta, seed))
    frame = long_rows(rows, method=method, beta=beta, seed=seed, stage="rl")
    write_csv(path, frame)
    return frame


# -- running many units ----------------------------------------------------------------------------
UNIT_RUNNERS = {"init": run_init_unit, "rl": run_rl_unit}
_WORKER_WORLD: dict[WorldConfig, World] = {}


def worker_world(config: WorldConfig) -> World:
    """The world of ``config``, built once per process."""
    return _WORKER_WORLD.get(config) or _WORKER_WORLD.setdefault(config, build_world(config))


def _run_unit(stage: str, settings: MiniSettings, base_dir: Path, data_dir: Path, method: str, beta: float,
              seed: int) -> str:
    one_thread(UNIT_RUNNERS[stage], worker_world(settings.world), settings, base_dir, data_dir, method, beta, seed)
    return unit_key(method, beta, seed)


def run_units(stage: str, settings: MiniSettings, base_dir: Path, data_dir: Path, *, progress: bool = True) -> list[str]:
    """Run every missing unit of ``stage`` (``init`` or ``rl``) over ``settings.units(stage)``.

    With ``settings.workers > 1`` units run in that many spawned processes. Each unit writes its
    own files, so the order does not matter and an interrupted call resumes where it stopped.
    Returns the keys of the units it ran.
    """
    if stage not in UNIT_RUNNERS:
        raise ValueError(f"stage={stage!r} is not one of {sorted(UNIT_RUNNERS)}")
    check_writable(data_dir)
    check_unit_settings(data_dir, settings)
    todo = [(stage, settings, base_dir, data_dir, m, b, s) for m, b, s in settings.units(stage)
            if not unit_path(data_dir, stage, unit_key(m, b, s)).exists()]
    return run_pool(_run_unit, todo, settings.workers, desc=f"{stage} units", progress=progress)
