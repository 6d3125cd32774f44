"""Presets: one name selects the scale of every notebook.

``smoke`` runs each notebook in seconds (CI, nbval) and writes only to the ignored
``scratch/`` folder; ``mini`` is the CPU miniature (the default of ``make reproduce``) and
refreshes the committed ``data/`` and ``figures/``; ``gpu`` runs real small models on one GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from gift_lite.evaluate import EvalSettings
from gift_lite.mini import INF, InitSettings, MiniSettings
from gift_lite.params import check_injected
from gift_lite.models import LoraSettings, TinyModelConfig
from gift_lite.protocol import SelectionSettings
from gift_lite.repro import repo_root
from gift_lite.rl import GRPOSettings
from gift_lite.world import PretrainConfig, WorldConfig

ENV_VAR = "GIFT_PRESET"
DEFAULT = "mini"


@dataclass(frozen=True)
class Preset:
    name: str
    scratch: bool  # True: write under scratch/, never over committed results (README, "Presets")
    mini: MiniSettings  # the miniature's protocol at this scale (notebooks 08-11)
    mini_ft: MiniSettings  # the full-fine-tuning protocol at this scale (notebooks 02-03)
    selection: SelectionSettings  # its selection grids (data/mini_ft/PROTOCOL.md §3-4)
    mini_conf: MiniSettings  # the confirmatory protocol at this scale (data/mini_conf/PROTOCOL.md)
    conf_selection: SelectionSettings  # its selection grids and base check

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

SMOKE_MINI_FT = replace(
    SMOKE_MINI, world=replace(SMOKE_MINI.world, n_val=8),
    init=replace(SMOKE_MINI.init, lora=None, learning_rate=1e-4),
    eval=replace(SMOKE_MINI.eval, curve_every=1, n_train_eval=8),
    rl=replace(SMOKE_MINI.rl, gradient_checkpointing=False, learning_rate=1e-4),
    rl_methods=("sft", "gift", "rl_only"), decisive_seeds=(1,), decisive_beta=1.0)
SMOKE_SELECTION = SelectionSettings(sft_learning_rates=(1e-4,), sft_max_epochs=2, rl_learning_rates=(1e-4,),
                                    rl_seeds=(0,), rl_max_steps=2, rl_last_evals=1,
                                    enforce=False)  # smoke only checks that every step runs

# Mini: the protocol of docs/paper.md §3-5 scaled to a 2-core CPU (docs/results_miniature.md). GRPO runs for
# SFT, GIFT at every beta and RL-only; the four baselines stop before RL (a cut for time).
MINI = MiniSettings(
    rl=GRPOSettings(per_device_train_batch_size=128, max_completion_length=24, max_steps=50,
                    learning_rate=1e-4),  # 16 prompts x 8; lr = SFT lr / 10, the paper's ratio
    betas=(0.5, 1.0, 2.0, 4.0, 20.0, INF),
    rl_methods=("sft", "gift", "rl_only"))

# The full-fine-tuning protocol (data/mini_ft/PROTOCOL.md): a wider world (numbers 1-13) so that
# converged RL sees each RL prompt about twice, a validation split for every selection, full
# fine-tuning at both stages, RL from every initialiser. Values marked "selected" are the outcome
# of the protocol's selection rules (notebook 02), which the notebook checks against these.
MINI_FT_WORLD = WorldConfig(max_number=13, n_val=200, n_rl=2400)
MINI_FT = MiniSettings(
    world=MINI_FT_WORLD,
    init=InitSettings(lora=None, learning_rate=3e-4, num_train_epochs=2),  # selected (notebook 02)
    eval=EvalSettings(max_new_tokens=20, curve_every=25, curve_samples=8, n_train_eval=200),  # PROTOCOL.md §5
    rl=GRPOSettings(per_device_train_batch_size=128, max_completion_length=20, gradient_checkpointing=False,
                    lr_scheduler_type="constant", learning_rate=1e-4, max_steps=325),  # lr, steps: selected
    rl_methods=("sft", "gift", "sft_entropy", "dft", "asft", "psft", "rl_only"),
    decisive_seeds=(3, 4), decisive_beta=1.0)  # decisive_beta: beta* (notebook 02)

# The confirmatory protocol (data/mini_conf/PROTOCOL.md): numbers 1-15 for 1000 fresh ID test problems,
# the OOD family (targets 51-99) in the pretraining corpus, 10 seeds for the decisive starts (its power
# analysis), LUFFY and ReLIFT from the base, the fast GRPO configuration (shared prompts). Values
# marked "selected" are the outcome of its selection rules (notebook 04), which notebook 04 checks.
MINI_CONF_WORLD = WorldConfig(max_number=15, n_val=200, n_rl=2400, n_id_test=1000, n_ood_test=500, ood_pretrain=1224)
MINI_CONF = replace(
    MINI_FT, world=MINI_CONF_WORLD,
    init=InitSettings(lora=None, learning_rate=3e-4, num_train_epochs=2),  # selected (notebook 04)
    eval=replace(MINI_FT.eval, share_prompts=True),
    rl=replace(MINI_FT.rl, share_prompts=True, learning_rate=1e-4, max_steps=275),  # selected (notebook 04)
    decisive_seeds=tuple(range(3, 10)), decisive_beta=1.0,  # 10 decisive seeds: the power analysis; beta*: selected
    unified=("luffy", "relift"))
CONF_SELECTION = SelectionSettings(base_ood_pass1=0.05, base_ood_pass16=0.40)  # PROTOCOL.md §1
SMOKE_MINI_CONF = replace(  # two seeds everywhere: the random-effects interval needs a seed spread
    SMOKE_MINI_FT, world=replace(SMOKE_MINI_FT.world, ood_pretrain=16),
    eval=replace(SMOKE_MINI_FT.eval, share_prompts=True), rl=replace(SMOKE_MINI_FT.rl, share_prompts=True),
    seeds=(0, 1), decisive_seeds=(), unified=("luffy", "relift"))

PRESETS: dict[str, Preset] = {
    "smoke": Preset(name="smoke", scratch=True, mini=SMOKE_MINI, mini_ft=SMOKE_MINI_FT, selection=SMOKE_SELECTION,
                    mini_conf=SMOKE_MINI_CONF, conf_selection=SMOKE_SELECTION),
    "mini": Preset(name="mini", scratch=False, mini=MINI, mini_ft=MINI_FT, selection=SelectionSettings(),
                   mini_conf=MINI_CONF, conf_selection=CONF_SELECTION),
    "gpu": Preset(name="gpu", scratch=False, mini=MINI, mini_ft=MINI_FT, selection=SelectionSettings(),
                  mini_conf=MINI_CONF, conf_selection=CONF_SELECTION),
}


def resolve_preset(name: str | None = None) -> Preset:
    """The preset named by the notebook parameter, else ``$GIFT_PRESET``, else ``mini``.

    Raises ``ValueError`` naming the valid presets for an unknown name or a non-string, and, in a
    notebook, naming a parameter papermill injected that the notebook does not have.
    """
    check_injected()
    if name is None:
        name = os.environ.get(ENV_VAR) or DEFAULT
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"preset={name!r} is not one of {sorted(PRESETS)}")
    return PRESETS[name]
