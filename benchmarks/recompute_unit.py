"""Recompute one committed GRPO unit of a miniature protocol and compare it, file by file, with the
committed one.

    python benchmarks/recompute_unit.py                      # rl_only, seed 0, data/mini_conf; ~10 min
    python benchmarks/recompute_unit.py --skip-run           # compare an earlier recompute again

The unit is recomputed on one thread, as ``mini.run_units`` runs every unit, into the ignored
``scratch/recompute/`` (never over the committed file), from the committed base (RL only and the
unified methods start from it; another start would first retrain its initialiser). Writes
``data/<protocol>/recompute_unit.csv``: per unit file whether its bytes are identical, and for the
reward curve the first GRPO step that differs; then test pass@1 (ID and OOD) committed and
recomputed. On one machine a recompute gives the same bytes (``tests/test_mini.py``); this shows
what another machine or library build does to the same unit.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from gift_lite import mini, units
from gift_lite.presets import resolve_preset
from gift_lite.repro import repo_root
from gift_lite.results import write_csv, write_run_json
from gift_lite.world import build_world

FILES = ("rl", "rl_problems", "rl_curves", "rl_val", "rl_val_problems")


def compare(committed: Path, recomputed: Path, key: str) -> pd.DataFrame:
    rows = []
    for stage in FILES:
        a, b = units.unit_path(committed, stage, key), units.unit_path(recomputed, stage, key)
        row = {"file": f"units/{stage}/{key}.csv", "identical": a.read_bytes() == b.read_bytes(), "value": "",
               "committed": float("nan"), "recomputed": float("nan")}
        if stage == "rl_curves":
            ca, cb = pd.read_csv(a), pd.read_csv(b)
            differ = ca["step"][(ca["reward"] != cb["reward"]).to_numpy()]
            row.update(value="first step whose batch reward differs", committed=len(ca),
                       recomputed=float(differ.min()) if len(differ) else float("nan"))
        rows.append(row)
    ra, rb = (pd.read_csv(units.unit_path(d, "rl", key), keep_default_na=False) for d in (committed, recomputed))
    for split in ("id", "ood"):
        pick = [float(r[(r["metric"] == "pass@1") & (r["split"] == split)]["value"].item()) for r in (ra, rb)]
        rows.append({"file": f"units/rl/{key}.csv", "identical": pick[0] == pick[1], "value": f"{split}/pass@1",
                     "committed": pick[0], "recomputed": pick[1]})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", default="mini_conf")
    parser.add_argument("--method", default="rl_only", choices=["rl_only", "luffy", "relift"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scratch", type=Path, default=repo_root() / "scratch" / "recompute")
    parser.add_argument("--skip-run", action="store_true", help="compare the unit already in --scratch")
    args = parser.parse_args(argv)
    cfg = resolve_preset("mini")
    settings, data_dir = getattr(cfg, args.protocol), cfg.data_dir(args.protocol)
    key = units.unit_key(args.method, float("inf"), args.seed)
    if not args.skip_run:
        world = build_world(settings.world)
        units.one_thread(mini.run_rl_unit, world, settings, data_dir / "base", args.scratch, args.method,
                         float("inf"), args.seed)
    table = compare(data_dir, args.scratch, key)
    out = data_dir / "recompute_unit.csv"
    write_csv(out, table)
    write_run_json(out.with_name("recompute_unit_run.json"), {"protocol": args.protocol, "unit": key})
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
