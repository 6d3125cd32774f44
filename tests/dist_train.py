"""Train GIFTTrainer on a tiny Qwen2 for a few steps and save what a run produced (tests only).

Imported by tests/test_distributed.py for the one-process runs, and run as a script under
``python -m torch.distributed.run --nproc_per_node 2 tests/dist_train.py SPEC OUT`` for the
two-process ones (gloo, CPU): every rank runs every case of the JSON spec in order and saves
the results of all of them to ``OUT.rank<r>`` (``torch.save``). ``"fsdp": true`` shards the model
with FSDP2 through ``GIFTConfig(fsdp=..., fsdp_config=...)``, made to work on CPU by
``cpu_fsdp.enable()``; ``"zero": 2`` or ``3`` uses DeepSpeed (``GIFTConfig(deepspeed=...)``, which
runs on CPU as it is, over gloo); otherwise a multi-process run is DDP.
"""

import json
import os
import sys
from pathlib import Path

import torch
from accelerate.state import AcceleratorState
from datasets import Dataset
from torch.distributed.tensor import DTensor
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from gift_lite.models import LoraSettings, add_lora
from gift_lite.trainer import GIFTConfig, GIFTTrainer

# Equal lengths, so every micro-batch has the same number of response tokens and a mean of
# per-micro-batch metrics (one process, gradient accumulation) equals the token-weighted mean
# over ranks (two processes).
ROWS = [("3 5 7>26:", "5*7=35,35-3=32"), ("2 4 6>12:", "2+4=06,06+6=12"),
        ("1 8 9>72:", "8*9=72,72*1=72"), ("2 3 5>30:", "2*3=06,06*5=30"), ("4 6 8>36:", "4*8=32,32+4=36")]
FSDP_CONFIG = {"version": 2, "transformer_layer_cls_to_wrap": ["Qwen2DecoderLayer"], "reshard_after_forward": True}


def full_state(model) -> dict[str, torch.Tensor]:
    """Every parameter as a full CPU tensor (an FSDP2 shard is all-gathered: all ranks must call)."""
    out = {}
    for name, param in model.named_parameters():
        tensor = param.full_tensor() if isinstance(param, DTensor) else param
        out[name] = tensor.detach().cpu().clone()
    return out


def train_case(model_dir: str, case: dict, out_dir: str) -> dict:
    """One run of GIFT (beta = 1) from the saved model. ``case``: ``lora`` (else full fine-tuning),
    ``fused`` (``GIFTConfig.fused_loss``), ``fsdp``, ``batch`` (per device), ``accumulation``;
    optional ``zero`` (a DeepSpeed ZeRO stage), ``checkpointing`` (gradient checkpointing),
    ``cache`` (a reference cache folder), ``rows`` (of ``ROWS``, default 4), ``steps`` (default 3)."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if case["lora"]:
        torch.manual_seed(0)  # the LoRA initialisation draws from the global RNG
        model = add_lora(model, LoraSettings(r=4, lora_alpha=8))
    tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)
    extra = {"fsdp": "full_shard", "fsdp_config": dict(FSDP_CONFIG)} if case["fsdp"] else {}
    if case.get("zero"):
        extra = {"deepspeed": {"zero_optimization": {"stage": case["zero"]},
                 "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
                 "gradient_clipping": "auto", "zero_allow_untested_optimizer": True}}
    config = GIFTConfig(output_dir=str(Path(out_dir) / "out"), loss_type="gift", beta=1.0,
                        max_steps=case.get("steps", 3),
                        per_device_train_batch_size=case["batch"],
                        gradient_accumulation_steps=case["accumulation"], learning_rate=5e-2,
                        logging_steps=1, save_strategy="no", report_to=[], seed=0,
                        disable_tqdm=True, max_length=64, fused_loss=case["fused"],
                        reference_cache=case.get("cache"), ddp_find_unused_parameters=False,
                        gradient_checkpointing=case.get("checkpointing", False),
                        **{"use_cpu": True, **extra})
    rows = Dataset.from_list([{"prompt": p, "completion": c} for p, c in ROWS[:case.get("rows", 4)]])
    trainer = GIFTTrainer(model=model, args=config, train_dataset=rows, processing_class=tokenizer)
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    return {"loss": [log["loss"] for log in logs], "entropy": [log["entropy"] for log in logs],
            "mean_token_accuracy": [log["mean_token_accuracy"] for log in logs],
            "weights": full_state(trainer.model),
            "sharded": any(isinstance(p, DTensor) for p in trainer.model.parameters()),
            "wrapper": type(trainer.model_wrapped).__name__, "fused": trainer.fused,
            "distributed_type": trainer.accelerator.distributed_type.value,
            "world_size": trainer.accelerator.num_processes,
            "cache_built": trainer.ref_cache_build_s is not None,
            "cache_keys": sorted(p.name for p in Path(case["cache"]).iterdir()) if case.get("cache") else []}


def main(spec_path: str, out_path: str) -> None:
    import cpu_fsdp

    cpu_fsdp.enable()
    torch.set_num_threads(1)
    spec = json.loads(Path(spec_path).read_text())
    results, fsdp = [], None
    for case in spec["cases"]:
        if fsdp is not None and case["fsdp"] != fsdp:
            # accelerate keeps its first distributed type for the life of the process; start over
            # (the process group stays) so the next Trainer's Accelerator picks DDP or FSDP anew
            AcceleratorState._reset_state(reset_partial_state=True)
            os.environ.pop("ACCELERATE_USE_FSDP", None)  # set by an Accelerator given an FSDP plugin
        fsdp = case["fsdp"]
        results.append(train_case(spec["model_dir"], case, spec["out_dir"]))
    torch.save(results, f"{out_path}.rank{os.environ.get('RANK', '0')}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main(*sys.argv[1:])
