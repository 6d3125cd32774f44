"""GIFTTrainer on two CPU processes (gloo) under real FSDP2 and under DDP, against one process.

One ``torch.distributed.run`` launch trains every case of ``CASES`` on 2 ranks x batch 2; the
same cases run here on one process with batch 2 x gradient accumulation 2, the same global batch
of the same rows in the same order. Each two-process run must really be what it claims (FSDP2:
``DTensor`` weights, so a silent fall-back to DDP fails; DDP: a DistributedDataParallel wrapper),
keep the path it was given (fused or logits), and end with the one-process run's losses, logged
metrics (on both ranks: they are gathered) and trained weights. accelerate uses FSDP on CPU only
through ``tests/cpu_fsdp.py``. DeepSpeed ZeRO-2/3 the same way, when it is installed. Also:
``python -m gift_lite.real init`` under ``accelerate launch`` with ``configs/accelerate_fsdp.yaml``,
and its refusal when an FSDP config does not shard.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dist_train
from gift_lite.real import main as real_main

TESTS = Path(__file__).parent
ROOT = TESTS.parent
TWO = dict(batch=2, accumulation=1)  # per rank; the one-process twin has batch 2 x accumulation 2
CASES = {
    "fsdp-lora-fused": dict(fsdp=True, lora=True, fused=True),
    "fsdp-full-fused": dict(fsdp=True, lora=False, fused=True),
    "fsdp-lora-logits": dict(fsdp=True, lora=True, fused=False),
    "fsdp-full-logits": dict(fsdp=True, lora=False, fused=False),
    # gradient checkpointing (the gpu preset's) re-runs each layer's forward inside FSDP's backward
    "fsdp-lora-fused-checkpointing": dict(fsdp=True, lora=True, fused=True, checkpointing=True),
    # 5 rows in batches of 2: rank 1 has no third batch and repeats its last (discarded) one
    "fsdp-lora-cache": dict(fsdp=True, lora=True, fused=True, cache=True, rows=5, steps=1),
    "ddp-lora-fused": dict(fsdp=False, lora=True, fused=True),
    "ddp-full-fused": dict(fsdp=False, lora=False, fused=True),
    "ddp-lora-logits": dict(fsdp=False, lora=True, fused=False),
    "ddp-full-logits": dict(fsdp=False, lora=False, fused=False),
    "ddp-full-cache": dict(fsdp=False, lora=False, fused=True, cache=True),
}
# DeepSpeed, when installed (not a dependency: docs/real_model.md "Beyond one GPU"). ZeRO-3 partitions the
# head, so the fused path falls back to the logits path (expected "fused": False) and ZeRO-3's
# bucketed reduce-scatter rounds differently: equal to 2e-5 (weights: 1e-5 absolute).
DEEPSPEED_CASES = {
    "zero2-lora-fused": dict(zero=2, lora=True, fused=True),
    "zero2-full-fused": dict(zero=2, lora=False, fused=True),
    "zero2-lora-logits": dict(zero=2, lora=True, fused=False),
    "zero2-full-logits": dict(zero=2, lora=False, fused=False),
    "zero3-lora-fused": dict(zero=3, lora=True, fused=True),
}


def with_cache(case: dict, folder: Path, name: str) -> dict:
    return {**case, "cache": str(folder / name)} if case.get("cache") else case


def launch_two(cases: dict, model_dir, work: Path) -> dict:
    """Every case on 2 ranks, one launch; ``{name: (rank 0 result, rank 1 result)}``."""
    spec = work / "spec.json"
    runs = [with_cache({"fsdp": False, **case, **TWO}, work / "caches", name) for name, case in cases.items()]
    spec.write_text(json.dumps({"model_dir": str(model_dir), "out_dir": str(work), "cases": runs}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(TESTS / "dist_train.py"), str(spec), str(work / "result.pt")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-6000:]
    ranks = [torch.load(work / f"result.pt.rank{r}", weights_only=False) for r in (0, 1)]
    return {name: (r0, r1) for name, r0, r1 in zip(cases, *ranks)}


@pytest.fixture(scope="module")
def two_process(tiny_model_dir, tmp_path_factory):
    """Every case of ``CASES`` on 2 ranks, and the folder of their reference caches."""
    work = tmp_path_factory.mktemp("two_process")
    return launch_two(CASES, tiny_model_dir, work), work / "caches"


def twin_of(case: dict) -> dict:
    """The one-process run a two-process case must reproduce: the same case without gradient
    checkpointing (it changes no number) and, for ZeRO-3, on the logits path."""
    twin = {k: v for k, v in case.items() if k not in ("fsdp", "zero", "checkpointing")}
    return {**twin, "fused": False} if case.get("zero") == 3 else twin


@pytest.fixture(scope="module")
def one_process(tiny_model_dir, tmp_path_factory):
    """The one-process twin of each distinct case (FSDP, DDP and DeepSpeed share theirs)."""
    work = tmp_path_factory.mktemp("one_process")
    twins, out = {}, {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank runs
    try:
        for name, case in {**CASES, **DEEPSPEED_CASES}.items():
            twin = twin_of(case)
            key = json.dumps(twin, sort_keys=True)
            if key not in twins:
                run = with_cache({**twin, "fsdp": False, "batch": 2, "accumulation": 2}, work / "caches", name)
                twins[key] = dist_train.train_case(str(tiny_model_dir), run, str(work))
            out[name] = twins[key]
    finally:
        torch.set_num_threads(threads)
    return out, work / "caches"


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_train_as_one(name, two_process, one_process):
    (r0, r1), one, case = two_process[0][name], one_process[0][name], CASES[name]
    if case["fsdp"]:
        assert (r0["distributed_type"], r0["sharded"]) == ("FSDP", True), r0["wrapper"]
        assert r0["wrapper"].startswith("FSDP")  # FSDP2 swaps in FSDP<class>
    else:
        assert (r0["distributed_type"], r0["sharded"], r0["wrapper"]) == ("MULTI_CPU", False,
                                                                          "DistributedDataParallel")
    assert r0["world_size"] == 2 and one["world_size"] == 1
    assert r0["fused"] is one["fused"] is case["fused"]  # no silent fall-back to the logits path
    assert len(r0["loss"]) == case.get("steps", 3)
    np.testing.assert_allclose(r0["loss"], one["loss"], rtol=1e-6, atol=0)
    for metric in ("entropy", "mean_token_accuracy"):  # gathered: rank 1 logs what rank 0 logs
        np.testing.assert_allclose(r1[metric], r0[metric], rtol=1e-12, atol=0)
        np.testing.assert_allclose(r0[metric], one[metric], rtol=1e-6, atol=0)
    assert r0["weights"].keys() == one["weights"].keys()
    trained = [n for n in one["weights"] if ("lora_" in n) == case["lora"]]
    assert trained
    for n, w in one["weights"].items():
        torch.testing.assert_close(r0["weights"][n], w, rtol=1e-6, atol=1e-7, msg=n)
        torch.testing.assert_close(r1["weights"][n], r0["weights"][n], rtol=0, atol=0, msg=n)


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed is not installed")
@pytest.mark.parametrize("name", list(DEEPSPEED_CASES))
def test_deepspeed_two_processes_train_as_one(name, one_process, deepspeed_runs):
    (r0, r1), one, case = deepspeed_runs[name], one_process[0][name], DEEPSPEED_CASES[name]
    assert (r0["distributed_type"], r0["world_size"], r0["wrapper"]) == ("DEEPSPEED", 2, "DeepSpeedEngine")
    assert r0["fused"] is one["fused"] is twin_of(case)["fused"]
    tol, atol = (2e-5, 1e-5) if case["zero"] == 3 else (1e-6, 1e-7)
    np.testing.assert_allclose(r0["loss"], one["loss"], rtol=tol, atol=0)
    for metric in ("entropy", "mean_token_accuracy"):
        np.testing.assert_allclose(r1[metric], r0[metric], rtol=1e-12, atol=0)
        np.testing.assert_allclose(r0[metric], one[metric], rtol=tol, atol=0)
    for n, w in one["weights"].items():
        torch.testing.assert_close(r0["weights"][n], w, rtol=tol, atol=atol, msg=n)


@pytest.fixture(scope="module")
def deepspeed_runs(tiny_model_dir, tmp_path_factory):
    return launch_two(DEEPSPEED_CASES, tiny_model_dir, tmp_path_factory.mktemp("deepspeed"))


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c.get("cache")])
def test_reference_cache_built_by_all_ranks_matches_one_process(name, two_process, one_process):
    """Built by the ranks together (sharded under FSDP2): the same key (the fingerprint hashes the
    full weights) and the same stored rows as the one-process build."""
    (r0, r1), one = two_process[0][name], one_process[0][name]
    assert r0["cache_built"] and r1["cache_built"] and one["cache_built"]
    assert r0["cache_keys"] == one["cache_keys"] and len(r0["cache_keys"]) == 1
    key = r0["cache_keys"][0]
    two_dir, one_dir = two_process[1] / name / key, one_process[1] / name / key
    files = sorted(p.name for p in one_dir.iterdir())
    assert files == sorted(p.name for p in two_dir.iterdir()) and "hidden.npy" in files
    for file in files:
        if file.endswith(".npy"):
            np.testing.assert_array_equal(np.load(two_dir / file), np.load(one_dir / file), err_msg=file)


def test_real_init_under_accelerate_launch_with_the_fsdp_config(tmp_path):
    """The FSDP command of docs/real_model.md on 2 CPU processes (bf16, as the config says): sharded, recorded."""
    out = tmp_path / "fsdp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(ROOT / "configs" / "accelerate_fsdp.yaml"), "--num_processes", "2",
                           str(TESTS / "cpu_fsdp.py"), "gift_lite.real", "init", "--preset", "smoke",
                           "--no-four-bit", "--max-steps", "2", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-6000:]
    stats = json.loads((out / "stats.json").read_text())
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert printed == stats
    assert (stats["distributed_type"], stats["world_size"], stats["sharded"]) == ("FSDP", 2, True)
    assert math.isfinite(stats["train/loss"]) and (out / "adapter" / "adapter_model.safetensors").exists()


def test_real_init_refuses_an_fsdp_config_that_does_not_shard(tmp_path, monkeypatch):
    """What ``accelerate launch`` with an FSDP config sets, on a run accelerate does not shard
    (one CPU process here; on CPU accelerate never shards): refused before training."""
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(RuntimeError, match=r"asks for FSDP .* set up NO on 1 process.*nothing would be sharded"):
        real_main(["init", "--preset", "smoke", "--no-four-bit", "--max-steps", "1", "--out", str(tmp_path)])
    assert not (tmp_path / "adapter").exists() and not (tmp_path / "stats.json").exists()


def test_check_parallelism_compares_what_was_asked_with_what_accelerate_set_up(monkeypatch):
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from gift_lite.real import check_parallelism

    def accelerator(kind, n):
        return SimpleNamespace(distributed_type=kind, num_processes=n, device=torch.device("cpu"))

    for variable in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "WORLD_SIZE"):
        monkeypatch.delenv(variable, raising=False)
    assert check_parallelism(accelerator(DistributedType.NO, 1)) == {"distributed_type": "NO", "world_size": 1}
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert check_parallelism(accelerator(DistributedType.MULTI_CPU, 2))["world_size"] == 2
    with pytest.raises(RuntimeError, match="2 processes were launched but accelerate set up DEEPSPEED with 1"):
        check_parallelism(accelerator(DistributedType.DEEPSPEED, 1))
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(RuntimeError, match=r"asks for DEEPSPEED .* set up MULTI_CPU on 2"):
        check_parallelism(accelerator(DistributedType.MULTI_CPU, 2))
    assert check_parallelism(accelerator(DistributedType.DEEPSPEED, 2))["distributed_type"] == "DEEPSPEED"
