"""The LM head as the fused loss uses it, and what several processes need of it.

``fused_head`` decides whether ``GIFTTrainer``'s fused path applies; ``add_hidden_forward`` lets
the model return its backbone's hidden states through its own ``forward``.

Several processes (``accelerate launch``): whether the fused path applies is checked again on
the model as accelerate prepared it. Under FSDP2 the head is an ``FSDPLinear`` with a sharded
``DTensor`` weight, and since the fused path never calls its ``forward``, FSDP's hooks never
gather it: ``unsharded_head`` calls the unit's ``unshard()`` (FSDP2's own all-gather), and the
root's post-backward callback reduce-scatters the head's gradient and reshards it. Two CPU
processes under FSDP2 or DDP train to the same losses and weights as one process with the same
global batch (tests/test_distributed.py).
"""

from __future__ import annotations

import functools
import types

import torch

try:  # FSDP2 (torch >= 2.6); a torch built without distributed has neither
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor
except ImportError:  # pragma: no cover
    FSDPModule = DTensor = None

HIDDEN_KWARG = "gift_hidden_states"  # model(..., gift_hidden_states=True): the backbone's output
# Config attributes that rescale or cap the logits after the head (TRL's fused head lists them);
# fused_gift_loss does neither, so such models take the logits path.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                    "logits_scaling")


def causal_lm(model):
    """The transformers model under PEFT (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def fused_head(model) -> torch.nn.Linear | None:
    """The LM head ``fused_gift_loss`` can stand in for, or None (then the logits path runs).

    ``model``: the transformers causal LM (under PEFT: ``get_base_model()``). Requires a backbone
    (``model.base_model`` is not the model itself), a plain ``nn.Linear`` head with an ordinary
    weight (not LoRA-wrapped, not bitsandbytes-quantised; bitsandbytes leaves lm_head alone), and
    no logit scaling or soft-capping in the config. FSDP2 counts as plain: ``fully_shard`` turns
    the head into an ``FSDPLinear`` (a subclass of ``FSDPModule`` and ``nn.Linear``) whose weight
    is a ``DTensor`` shard; ``unsharded_head`` gathers it.
    """
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if _own_class(head) is not torch.nn.Linear or not _plain_weight(head.weight):
        return None
    if getattr(model, "base_model", model) is model:
        return None
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if any(getattr(config, name, None) not in (None, 1, 1.0) for name in LOGIT_TRANSFORMS):
        return None
    return head


def fsdp_sharded(model) -> bool:
    """Whether any weight of ``model`` is an FSDP2 shard (a ``DTensor``)."""
    return DTensor is not None and any(isinstance(p, DTensor) for p in model.parameters())


def unsharded_head(root) -> torch.nn.Linear:
    """``fused_head`` of ``root`` (the accelerate-unwrapped model), with its full weight in place.

    Under FSDP2 the fused path never calls the head's ``forward``, so FSDP's pre-forward hook
    never all-gathers it: this calls ``unshard()`` on the FSDP unit holding the head (FSDP2's own
    all-gather; a no-op when the unit is already unsharded). The unit stays unsharded until the
    backward pass ends, where the root's post-backward callback reduce-scatters the head's
    gradient (full fine-tuning) and reshards it, as for any unit whose forward did not run.
    """
    head = fused_head(causal_lm(root))
    unit = _fsdp_unit(root, head)
    if unit is not None:
        unit.unshard()
    if not _plain_weight(head.weight, sharded=False):
        raise RuntimeError(f"lm_head.weight is still a {type(head.weight).__name__} after unsharding")
    return head


def _own_class(module) -> type:
    """``type(module)`` seen through FSDP2's wrapper class ``FSDP<cls>(FSDPModule, cls)``."""
    cls = type(module)
    if FSDPModule is not None and isinstance(module, FSDPModule):
        cls = next(base for base in cls.__bases__ if base is not FSDPModule)
    return cls


def _plain_weight(weight, sharded: bool = True) -> bool:
    """An ordinary ``nn.Parameter`` (not one DeepSpeed ZeRO-3 partitioned: it carries a ``ds_id``
    and is empty outside the modules' own forward), or (``sharded``) FSDP2's ``DTensor`` one."""
    if type(weight) is torch.nn.Parameter:
        return not hasattr(weight, "ds_id")
    return sharded and DTensor is not None and isinstance(weight, DTensor)


def _fsdp_unit(root, module):
    """The FSDP2 module whose parameter group holds ``module``'s weight: ``module`` itself or its
    innermost ``FSDPModule`` ancestor in ``root``; None without FSDP2."""
    if FSDPModule is None or not any(isinstance(m, FSDPModule) for m in (root, module)):
        return None
    if isinstance(module, FSDPModule):
        return module
    path = next(name for name, m in root.named_modules() if m is module).split(".")
    for depth in range(len(path) - 1, -1, -1):
        owner = root.get_submodule(".".join(path[:depth]))
        if isinstance(owner, FSDPModule):
            return owner
    return None


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor: an FSDP2 ``DTensor`` shard is all-gathered (collective), others as is."""
    return tensor.full_tensor() if DTensor is not None and isinstance(tensor, DTensor) else tensor


def gather_to_main(obj, world: int) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on rank 0 (pickled through the process group);
    ``[]`` on the other ranks; ``[obj]`` for one process."""
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * world if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out or []


def add_hidden_forward(model) -> None:
    """Let ``model(..., gift_hidden_states=True)`` return its backbone's output, skipping the head.

    The same move as TRL's ``add_fused_lm_head``: the call still enters through the (possibly
    DDP/accelerate/PEFT-wrapped) model's ``forward``, so gradient hooks, autocast and LoRA apply.
    """
    if getattr(model.forward, "_gift_hidden", False):
        return
    previous = model.forward

    @functools.wraps(type(model).forward)
    def forward(self, *args, labels=None, **kwargs):
        if not kwargs.pop(HIDDEN_KWARG, False):
            return previous(*args, labels=labels, **kwargs)
        kwargs = {k: v for k, v in kwargs.items() if v is not None}  # PEFT passes output_* = None
        kwargs["use_cache"] = False
        return self.base_model(*args, **kwargs)

    forward._gift_hidden = True
    model.forward = types.MethodType(forward, model)
