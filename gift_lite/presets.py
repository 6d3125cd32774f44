"""Presets: one name selects the scale of every notebook.

``smoke`` runs each notebook in seconds (CI, nbval) and writes only to the ignored
``scratch/`` folder; ``mini`` is the CPU miniature (the default of ``make reproduce``) and
refreshes the committed ``data/`` and ``figures/``; ``gpu`` runs real small models on one GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gift_lite.repro import repo_root

ENV_VAR = "GIFT_PRESET"
DEFAULT = "mini"


@dataclass(frozen=True)
class Preset:
    name: str
    scratch: bool  # True: write under scratch/, never over committed results (STYLE.md)
    seeds: tuple[int, ...]  # seeds per method (ours: >= 3 for the mini claims, 1 for smoke)

    def data_dir(self, world: str) -> Path:
        """Folder for this preset's result files of ``world`` (e.g. ``mini``, ``theory``)."""
        return self._root() / "data" / world

    def figures_dir(self) -> Path:
        return self._root() / "figures"

    def _root(self) -> Path:
        return repo_root() / "scratch" / self.name if self.scratch else repo_root()


PRESETS: dict[str, Preset] = {
    "smoke": Preset(name="smoke", scratch=True, seeds=(0,)),
    "mini": Preset(name="mini", scratch=False, seeds=(0, 1, 2)),
    "gpu": Preset(name="gpu", scratch=False, seeds=(0,)),
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
