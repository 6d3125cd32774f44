"""The miniature's protocol: base → initialiser (SFT, GIFT, baselines) → GRPO, with evaluation.

Every unit of work (one method, β and seed at one stage) writes its own rows file under
``<data_dir>/units/<stage>/<key>.csv`` (atomically) and is skipped when that file exists, so an
interrupted notebook resumes where it stopped and a finished one re-runs in seconds.
``collect`` gathers the units into the long-format ``results.csv`` (``results.RESULT_COLUMNS``).

Every method gets the same data, steps, learning rate and LoRA shape (``InitSettings``), and
every RL run the same ``GRPOSettings``: only the loss differs.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, PrinterCallback

from gift_lite.evaluate import (evaluate_task, kl_to_base, merged_state_dict, token_entropy, topk_overlap,
                                weight_geometry)
from gift_lite.models import (LoraSettings, TinyModelConfig, add_lora, load_adapter, load_tokenizer,
                              save_adapter)
from gift_lite.repro import seed_everything
from gift_lite.results import RESULT_COLUMNS, atomic_write, check_writable, long_rows, write_csv, write_json
from gift_lite.rewards import countdown_reward_func
from gift_lite.rl import GRPOSettings, grpo_config, reward_curve, run_grpo
from gift_lite.trainer import GIFTConfig, GIFTTrainer
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
    lora: LoraSettings = LoraSettings(r=8, lora_alpha=16)  # ours


@dataclass(frozen=True)
class EvalSettings:
    num_samples: int = 16  # ours: enough for pass@16 (the paper reports pass@1..8 before RL)
    ks: tuple[int, ...] = (1, 2, 4, 8, 16)  # issue 3
    temperature: float = 1.0  # ours: the rollout temperature, so pass@k measures what RL can explore
    max_new_tokens: int = 32  # a solution has at most 15 characters
    batch_size: int = 512  # sequences per generate call


@dataclass(frozen=True)
class MiniSettings:
    """Everything a miniature run depends on; one instance per preset (presets.py)."""

    world: WorldConfig = WorldConfig()
    model: TinyModelConfig = TinyModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    init: InitSettings = InitSettings()
    eval: EvalSettings = EvalSettings()
    rl: GRPOSettings = GRPOSettings()
    betas: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 20.0, INF)  # GIFT's β grid (notebook 03 shows why)
    baselines: tuple[str, ...] = ("sft_entropy", "dft", "asft", "psft")
    rl_methods: tuple[str, ...] = ("sft", "gift", "sft_entropy", "dft", "asft", "psft", "rl_only")
    seeds: tuple[int, ...] = (0, 1, 2)
    workers: int = 2  # ours: units run in parallel processes of one thread each (2 cores)

    def init_runs(self) -> list[tuple[str, float]]:
        """(method, β) of every initialiser: SFT, GIFT at each finite β, then the baselines."""
        runs = [("sft", INF)] + [("gift", b) for b in self.betas if b != INF]
        return runs + [(m, INF) for m in self.baselines]

    def rl_runs(self) -> list[tuple[str, float]]:
        """(method, β) of every RL run: each initialiser whose method is in ``rl_methods``, then RL only."""
        runs = [(m, b) for m, b in self.init_runs() if m in self.rl_methods]
        return runs + ([("rl_only", INF)] if "rl_only" in self.rl_methods else [])

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
        f"  LoRA r={i.lora.r}, {i.num_train_epochs} epochs, lr {i.learning_rate:g}, batch {i.per_device_train_batch_size}",
        f"GRPO: {r.max_steps} steps, {r.per_device_train_batch_size // r.num_generations} prompts x "
        f"{r.num_generations} samples, lr {r.learning_rate:g}, for {list(settings.rl_methods)}",
        f"evaluation: {e.num_samples} samples per problem at temperature {e.temperature:g}, k in {list(e.ks)}",
    ])


# -- keys and paths --------------------------------------------------------------------------------
def unit_key(method: str, beta: float, seed: int) -> str:
    return f"{method}_beta{beta:g}_seed{seed}"


def check_unit_settings(data_dir: Path, settings, ignore: tuple[str, ...] = ("workers",)) -> None:
    """Record the settings behind ``data_dir``'s units, and refuse to mix units of other settings.

    Units are cached by (method, β, seed) only, so reusing a folder after changing, say, the
    epochs would silently mix two protocols. ``settings`` is ``MiniSettings`` or ``RealSettings``;
    the fields in ``ignore`` are left out: ``workers`` changes no number, and real runs put units
    of several methods, β and seeds in one folder.
    """
    path = Path(data_dir) / "units" / "settings.json"
    if not path.exists():
        write_json(path, _settings_without(settings.config_dict(), ignore))
    elif not recorded_settings_match(data_dir, settings, ignore):
        raise ValueError(f"data_dir={str(data_dir)!r} holds units made with other settings "
                         f"({path.name}); use another folder or delete its units/, adapters/ and checkpoints/")


def _settings_without(config: dict, ignore: tuple[str, ...]) -> dict:
    return json.loads(json.dumps({k: v for k, v in config.items() if k not in ignore}))


def recorded_settings_match(data_dir: Path, settings, ignore: tuple[str, ...]) -> bool:
    """Whether ``data_dir``'s ``units/settings.json`` equals ``settings``, both without ``ignore``."""
    recorded = json.loads((Path(data_dir) / "units" / "settings.json").read_text())
    return _settings_without(recorded, ignore) == _settings_without(settings.config_dict(), ignore)


def reuse_initialisers(src_dir: Path, dst_dir: Path, settings: MiniSettings) -> int:
    """Copy ``src_dir``'s base and initialiser units, with their adapters, into ``dst_dir``.

    For a run that changes only the RL stage (notebook 08): its initialisers would be the same,
    so they are reused, not retrained. Refuses a ``src_dir`` whose settings differ from
    ``settings`` in anything but ``rl``. Each file and adapter folder is copied under a temporary
    name and renamed, adapters before the unit files that mark them done; what ``dst_dir``
    already has is kept. Returns the number of units copied.
    """
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    if not (src_dir / "units" / "settings.json").exists():
        raise ValueError(f"src_dir={str(src_dir)!r} holds no initialiser units yet: run notebooks 02-04 first")
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


def unit_path(data_dir: Path, stage: str, key: str) -> Path:
    return Path(data_dir) / "units" / stage / f"{key}.csv"


def adapter_dir(data_dir: Path, stage: str, key: str) -> Path:
    return Path(data_dir) / "adapters" / stage / key


# -- the base --------------------------------------------------------------------------------------
def base_is_current(base_dir: Path, settings: MiniSettings) -> bool:
    """True when ``base_dir`` holds a base pretrained with exactly these world/model/pretrain settings."""
    info = Path(base_dir) / "pretrain.json"
    if not (info.exists() and (Path(base_dir) / "model.safetensors").exists()):
        return False
    saved = json.loads(info.read_text())
    wanted = json.loads(json.dumps({"world": asdict(settings.world), "model": asdict(settings.model),
                                    "pretrain": asdict(settings.pretrain)}))
    return all(saved.get(k) == v for k, v in wanted.items())


def ensure_base(world: World, settings: MiniSettings, base_dir: Path, *, force: bool = False) -> dict:
    """Pretrain the base into ``base_dir`` unless a current one is there; returns ``pretrain.json``."""
    if force or not base_is_current(base_dir, settings):
        check_writable(Path(base_dir).parent)
        pretrain_base(world, settings.model, settings.pretrain, out_dir=base_dir)
    return json.loads((Path(base_dir) / "pretrain.json").read_text())


def load_policy(base_dir: Path, adapter: Path | None = None, *, trainable: bool = False):
    """The base (fp32, eval mode) with an optional adapter on top, and its tokenizer."""
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if adapter is not None:
        model = load_adapter(model, adapter, is_trainable=trainable)
    return model.eval(), load_tokenizer(base_dir)


# -- evaluation -----------------------------------------------------------------------------------
def evaluate_policy(model, tokenizer, world: World, settings: EvalSettings, *, seed: int,
                    base_model=None) -> list[dict]:
    """pass@k on ID and OOD tests, plus entropy, KL and top-K overlap to the base on held-out text.

    Held-out text: the ID test problems with their expert-style solutions (the SFT distribution).
    ``base_model=None`` with a PEFT model uses the adapter-disabled model as the base.
    """
    rows = []
    for split, problems in (("id", world.id_test), ("ood", world.ood_test)):
        metrics = evaluate_task(model, tokenizer, problems, num_samples=settings.num_samples, ks=settings.ks,
                                temperature=settings.temperature, max_new_tokens=settings.max_new_tokens,
                                batch_size=settings.batch_size, seed=seed, progress=False)
        rows += [{"split": split, "metric": m, "value": v} for m, v in metrics.items()]
    prompts = [p.prompt for p in world.id_test]
    completions = [expert_solution(p) for p in world.id_test]
    rows.append({"split": "", "metric": "entropy", "value": token_entropy(model, tokenizer, prompts, completions)})
    if base_model is not None or hasattr(model, "disable_adapter"):
        rows.append({"split": "", "metric": "kl_to_base",
                     "value": kl_to_base(model, base_model, tokenizer, prompts, completions)})
        rows.append({"split": "", "metric": "topk_overlap",
                     "value": topk_overlap(model, base_model, tokenizer, prompts, completions)})
    return rows


def _geometry_rows(a, b, name: str) -> list[dict]:
    geo = weight_geometry(a, b)
    return [{"split": "", "metric": f"{name}/cosine", "value": geo["cosine"]},
            {"split": "", "metric": f"{name}/l2", "value": geo["l2"]}]


# -- units of work ------------------------------------------------------------------------------------
def run_base_unit(world: World, settings: MiniSettings, base_dir: Path, data_dir: Path) -> pd.DataFrame:
    """Evaluate the untouched base once (stage ``base``); cached like every unit."""
    check_unit_settings(data_dir, settings)
    path = unit_path(data_dir, "base", "base")
    if path.exists():
        return pd.read_csv(path, keep_default_na=False)
    model, tokenizer = load_policy(base_dir)
    rows = evaluate_policy(model, tokenizer, world, settings.eval, seed=0, base_model=model)
    frame = long_rows(rows, method="base", beta=0.0, seed=0, stage="base")
    write_csv(path, frame)
    return frame


def train_initialiser(world: World, settings: MiniSettings, base_dir: Path, method: str, beta: float,
                      seed: int, out_dir: Path) -> dict:
    """Train one LoRA initialiser with ``GIFTTrainer``; saves the adapter to ``out_dir``."""
    model, tokenizer = load_policy(base_dir)
    seed_everything(seed)  # the LoRA initialisation draws from the global RNG
    model = add_lora(model, settings.init.lora)
    init = settings.init
    with tempfile.TemporaryDirectory() as scratch:
        config = GIFTConfig(
            output_dir=scratch, loss_type=method, beta=beta if method == "gift" else INF, seed=seed,
            num_train_epochs=init.num_train_epochs, learning_rate=init.learning_rate,
            per_device_train_batch_size=init.per_device_train_batch_size,
            lr_scheduler_type=init.lr_scheduler_type, warmup_steps=0, weight_decay=init.weight_decay,
            adam_beta2=init.adam_beta2, max_grad_norm=init.max_grad_norm, logging_steps=10,
            save_strategy="no", report_to=[], max_length=64, disable_tqdm=True,
            use_cpu=not torch.cuda.is_available())
        trainer = GIFTTrainer(model=model, args=config, train_dataset=world.sft_dataset(),
                              processing_class=tokenizer)
        trainer.remove_callback(PrinterCallback)  # the notebook shows one progress bar over runs
        result = trainer.train()
    save_adapter(model, out_dir)
    return {"train/loss": result.training_loss}


def run_init_unit(world: World, settings: MiniSettings, base_dir: Path, data_dir: Path, method: str,
                  beta: float, seed: int) -> pd.DataFrame:
    """Train (or reuse) one initialiser and evaluate it (stage ``init``)."""
    key = unit_key(method, beta, seed)
    path = unit_path(data_dir, "init", key)
    if path.exists():
        return pd.read_csv(path, keep_default_na=False)
    adapter = adapter_dir(data_dir, "init", key)
    stats = train_initialiser(world, settings, base_dir, method, beta, seed, adapter)
    model, tokenizer = load_policy(base_dir, adapter)
    rows = evaluate_policy(model, tokenizer, world, settings.eval, seed=seed)
    rows += [{"split": "", "metric": k, "value": v} for k, v in stats.items()]
    rows += _geometry_rows(_base_state(model), model, "geometry/base_to_init")
    frame = long_rows(rows, method=method, beta=beta, seed=seed, stage="init")
    write_csv(path, frame)
    return frame


def _base_state(model) -> dict[str, torch.Tensor]:
    """The frozen base weights under a PEFT model, without the LoRA tensors."""
    return {k.replace(".base_layer", ""): v for k, v in model.state_dict().items() if "lora_" not in k}


def run_rl_unit(world: World, settings: MiniSettings, base_dir: Path, data_dir: Path, method: str,
                beta: float, seed: int) -> pd.DataFrame:
    """GRPO from one initialiser (``rl_only``: from fresh adapters on the base), then evaluate (stage ``rl``).

    Also writes the run's reward curve to ``units/rl_curves/<key>.csv``.
    """
    key = unit_key(method, beta, seed)
    path = unit_path(data_dir, "rl", key)
    if path.exists():
        return pd.read_csv(path, keep_default_na=False)
    if method == "rl_only":
        policy, tokenizer = load_policy(base_dir)
        seed_everything(seed)
        policy = add_lora(policy, settings.init.lora)
    else:
        policy, tokenizer = load_policy(base_dir, adapter_dir(data_dir, "init", key), trainable=True)
    start_state = {k: v.clone() for k, v in merged_state_dict(policy).items()}
    with tempfile.TemporaryDirectory() as scratch:
        config = grpo_config(settings.rl, scratch, seed=seed, disable_tqdm=True,
                             use_cpu=not torch.cuda.is_available())
        trainer = run_grpo(policy.train(), tokenizer, world.rl_dataset(), countdown_reward_func, config)
    curve = reward_curve(trainer)
    save_adapter(policy, adapter_dir(data_dir, "rl", key))
    policy.eval()
    rows = evaluate_policy(policy, tokenizer, world, settings.eval, seed=seed)
    rows += _geometry_rows(start_state, policy, "geometry/init_to_rl")
    rows.append({"split": "", "metric": "rl/frac_reward_zero_std", "value": float(curve["frac_reward_zero_std"].mean())})
    rows.append({"split": "", "metric": "rl/reward", "value": float(curve["reward"].mean())})
    curve.insert(0, "seed", seed)
    curve.insert(0, "beta", beta)
    curve.insert(0, "method", method)
    write_csv(unit_path(data_dir, "rl_curves", key), curve)
    frame = long_rows(rows, method=method, beta=beta, seed=seed, stage="rl")
    write_csv(path, frame)
    return frame


def collect(data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All finished units as one long table, and all RL reward curves as another."""
    units = Path(data_dir) / "units"
    results = [pd.read_csv(p, keep_default_na=False) for stage in ("base", "init", "rl")
               for p in sorted((units / stage).glob("*.csv"))]
    curves = [pd.read_csv(p) for p in sorted((units / "rl_curves").glob("*.csv"))]
    results = pd.concat(results, ignore_index=True) if results else pd.DataFrame(columns=list(RESULT_COLUMNS))
    curves = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    return results, curves


# -- running many units ----------------------------------------------------------------------------
UNIT_RUNNERS = {"init": run_init_unit, "rl": run_rl_unit}
_WORKER_WORLD: dict[WorldConfig, World] = {}


def _run_unit(stage: str, settings: MiniSettings, base_dir: Path, data_dir: Path, method: str, beta: float,
              seed: int) -> str:
    """Run one unit on one thread (so its numbers do not depend on how many run at once)."""
    world = _WORKER_WORLD.get(settings.world) or _WORKER_WORLD.setdefault(settings.world, build_world(settings.world))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        UNIT_RUNNERS[stage](world, settings, base_dir, data_dir, method, beta, seed)
    finally:
        torch.set_num_threads(threads)
    return unit_key(method, beta, seed)


def run_units(stage: str, settings: MiniSettings, base_dir: Path, data_dir: Path, *, progress: bool = True) -> list[str]:
    """Run every missing unit of ``stage`` (``init`` or ``rl``) over ``settings.seeds``.

    With ``settings.workers > 1`` units run in that many spawned processes. Each unit writes its
    own files, so the order does not matter and an interrupted call resumes where it stopped.
    Returns the keys of the units it ran.
    """
    if stage not in UNIT_RUNNERS:
        raise ValueError(f"stage={stage!r} is not one of {sorted(UNIT_RUNNERS)}")
    check_writable(data_dir)
    check_unit_settings(data_dir, settings)
    runs = settings.init_runs() if stage == "init" else settings.rl_runs()
    todo = [(m, b, s) for m, b in runs for s in settings.seeds
            if not unit_path(data_dir, stage, unit_key(m, b, s)).exists()]
    bar = tqdm(total=len(todo), desc=f"{stage} units", disable=not progress)
    done = []
    if settings.workers <= 1:
        for run in todo:
            done.append(_run_unit(stage, settings, base_dir, data_dir, *run))
            bar.update()
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(settings.workers, mp_context=context) as pool:
            futures = [pool.submit(_run_unit, stage, settings, base_dir, data_dir, *run) for run in todo]
            for future in as_completed(futures):
                done.append(future.result())
                bar.update()
    bar.close()
    return done
