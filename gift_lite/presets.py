"""Presets: one name selects the scale of every notebook.

``smoke`` runs each notebook in seconds (CI, nbval) and writes only to the ignored
``scratch/`` folder; ``mini`` is the CPU miniature (the default of ``make reproduce``) and
refreshes the committed ``data/`` and ``figures/``; ``gpu`` runs real small models on one GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gift_lite.mini import INF, EvalSettings, InitSettings, MiniSettings
from gift_lite.models import LoraSettings, TinyModelConfig
from gift_lite.repro import repo_root
from gift_lite.rl import GRPOSettings
from gift_lite.world import PretrainConfig, WorldConfig

ENV_VAR = "GIFT_PRESET"
DEFAULT = "mini"


@dataclass(frozen=True)
class Preset:
    name: str
    scratch: bool  # True: write under scratch/, never over committed results (STYLE.md)
    mini: MiniSettings  # the miniature's protocol at this scale (notebooks 02-05)

    def data_dir(self, world: str) -> Path:
        """Folder for this preset's result files of ``world`` (e.g. ``mini``, ``theory``)."""
        return self._root() / "data" / world

    def figures_dir(self) -> Path:
        return self._root() / "figures"

    def _root(self) -> Path:
        return repo_root() / "scratch" / self.name if self.scratch else repo_root()


# Smoke: every stage of the protocol, each cut to seconds, to check that the code runs.
SMOKE_MINI = MiniSettings(
    world=WorldConfig(n_id_test=8, n_ood_test=8, n_sft=16, n_rl=16, corpus_size=2000),
    model=TinyModelConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                          intermediate_size=64),
    pretrain=PretrainConfig(max_steps=40, batch_size=32, warmup_steps=5),
    init=InitSettings(num_train_epochs=1, per_device_train_batch_size=8, lora=LoraSettings(r=4, lora_alpha=8)),
    eval=EvalSettings(num_samples=4, ks=(1, 2, 4), batch_size=64),
    rl=GRPOSettings(num_generations=4, per_device_train_batch_size=8, max_completion_length=16, max_steps=2,
                    learning_rate=1e-3),
    betas=(1.0, INF), baselines=("dft",), rl_methods=("sft", "gift", "rl_only"), seeds=(0,), workers=1)

# Mini: the protocol of FACTS.md §3-5 scaled to a 2-core CPU (README "Budgets"). GRPO runs for
# SFT, GIFT at every beta and RL-only; the four baselines stop before RL (a cut for time).
MINI = MiniSettings(
    rl=GRPOSettings(per_device_train_batch_size=128, max_completion_length=24, max_steps=50,
                    learning_rate=1e-4),  # 16 prompts x 8; lr = SFT lr / 10, the paper's ratio
    betas=(0.5, 1.0, 2.0, 4.0, 20.0, INF),
    rl_methods=("sft", "gift", "rl_only"))

PRESETS: dict[str, Preset] = {
    "smoke": Preset(name="smoke", scratch=True, mini=SMOKE_MINI),
    "mini": Preset(name="mini", scratch=False, mini=MINI),
    "gpu": Preset(name="gpu", scratch=False, mini=MINI),
}


def resolve_preset(name: str | None = None) -> Preset:
    """The preset named by the notebook parameter, else ``$GIFT_PRESET``, else ``mini``.

    Raises ``ValueError`` naming the valid presets for an unknown name or a non-string.
    """
    if name is None:
        name = os.environ.get(ENV_VAR) or DEFAULT
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"preset={name!r} is not one of {sorted(PRESETS)}")
    return PRESETS[name]
