"""The paper's unified SFT+RL baselines, LUFFY and ReLIFT, on TRL's ``GRPOTrainer``.

Both run GRPO from the base and use the expert solution of each RL prompt inside the RL stage;
neither has a separate SFT stage. What they do, from their official code (``docs/paper.md`` §4b;
the differences that remain are listed in ``docs/official_code.md``):

LUFFY (arXiv 2504.14945; ElliottYan/LUFFY, ``luffy/verl/verl/mix_src/``)
    In every group, one of the ``num_generations`` samples is replaced by the expert solution
    (``mix_vllm_rollout.py``, ``n_prefix = 1``). Advantages are taken over the mixed group, mean
    only. The expert's tokens are trained with ``-A * f(pi_theta)``, ``f(p) = p / (p + 0.1)``
    (``off_policy_reshape = "p_div_p_0.1"``), with no importance ratio and no clipping; the
    sampled tokens keep the GRPO loss (``mix_core_alg.py``, ``compute_token_on_off_policy_loss``).
    Here: ``expert_rollout`` is the ``rollout_func`` that mixes the expert in, and
    ``LUFFYTrainer._compute_loss`` adds the shaped off-policy term to TRL's own loss, which sees the
    expert rows with a zero advantage. Both terms are divided by the batch's token count, as
    TRL's ``dapo`` loss is, so the mixed loss is the token mean over all completions.

ReLIFT (arXiv 2506.07527; TheRoadQaQ/ReLIFT, ``relift/verl/verl/relift/``)
    Every prompt whose rollouts all fail goes to the front of a buffer (one entry per prompt and
    step; a prompt that fails again later enters again). Whenever the buffer holds at least
    ``buffer_size`` entries, one SFT step on the newest ``buffer_size`` of them follows the RL step,
    and those leave the buffer (the rest stay): token-mean NLL minus 0.001 x entropy, its own
    optimizer, gradient clip 1.0 (``trainer.py``; ``core_algos.py``, ``compute_sft_loss``). The RL
    step uses the whole batch. Here: ``FailureRecorder`` wraps the reward function and records each prompt's
    rewards, and ``ReLIFTCallback.on_step_end`` runs the SFT step.

Both official trainers keep the RL learning rate constant (verl's actor, no warm-up, no decay);
``config_overrides`` gives them that schedule wherever the settings leave ``lr_scheduler_type`` at
``GRPOSettings``' default (TRL's linear decay to 0).

Both need ``expert_of``, a mapping from each RL prompt's text to its expert completion (no EOS;
the EOS is appended here, as TRL's ``SFTTrainer`` appends it to SFT data).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

import torch
from transformers import TrainerCallback
from trl import GRPOTrainer

from gift_lite.rl import GRPOSettings

LUFFY_SHAPING = 0.1  # f(p) = p / (p + 0.1): official "p_div_p_0.1"
RELIFT_ENTROPY = 0.001  # official compute_sft_loss: NLL - 0.001 * entropy
RELIFT_MAX_GRAD_NORM = 1.0  # official SFT step
UNIFIED = ("luffy", "relift")
OFFICIAL_LR_SCHEDULER = "constant"  # both official scripts: verl's actor optimizer, constant, no warm-up


def config_overrides(settings: GRPOSettings) -> dict:
    """``grpo_config`` overrides of a unified method: the official constant learning rate unless the
    settings chose a schedule other than ``GRPOSettings``' default (a preset that wants linear decay
    for LUFFY or ReLIFT cannot ask for it by writing the default)."""
    default = GRPOSettings.__dataclass_fields__["lr_scheduler_type"].default
    chosen = settings.lr_scheduler_type
    return {"lr_scheduler_type": OFFICIAL_LR_SCHEDULER if chosen == default else chosen}


# -- LUFFY ---------------------------------------------------------------------------------------------
def luffy_shaping(p: torch.Tensor) -> torch.Tensor:
    """LUFFY's policy shaping of the expert tokens' probabilities, ``p / (p + 0.1)``."""
    return p / (p + LUFFY_SHAPING)


def luffy_off_policy_loss(logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                          normalizer: torch.Tensor | float) -> torch.Tensor:
    """``sum(-A * f(exp(logp)) * mask) / normalizer`` over the expert rows: no ratio, no clipping.

    ``logps`` (rows, tokens) are the current policy's log-probabilities of the expert tokens,
    ``advantages`` (rows,) the expert rows' group advantages, ``mask`` their completion mask.
    """
    return -(advantages.unsqueeze(1) * luffy_shaping(logps.exp()) * mask).sum() / normalizer


def expert_completion_ids(tokenizer, completion: str) -> list[int]:
    """Token ids of an expert completion as a sampled completion looks: no BOS, then EOS."""
    return tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def expert_rollout(expert_of: dict[str, str]) -> Callable:
    """A ``rollout_func`` for ``GRPOTrainer``: TRL's own generation, then the last sample of every
    group replaced by the expert solution of its prompt. The trainer's ``_expert_rows`` receives
    the mask of replaced rows (``LUFFYTrainer`` puts it into the batch)."""

    def rollout(prompts: list, trainer) -> dict:
        missing = sorted({p for p in prompts if p not in expert_of})
        if missing:
            raise ValueError(f"prompt={missing[0]!r} has no expert solution in expert_of")
        prompt_ids, _, _ = trainer._tokenize_prompts(prompts)
        completion_ids, _ = trainer._generate_single_turn(prompt_ids, None, {}, trainer.num_generations)
        group = trainer.num_generations
        expert = [i % group == group - 1 for i in range(len(prompts))]
        for i, is_expert in enumerate(expert):
            if is_expert:
                completion_ids[i] = expert_completion_ids(trainer.processing_class, expert_of[prompts[i]])
        trainer._expert_rows = torch.tensor(expert, dtype=torch.bool)
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None}

    return rollout


class LUFFYTrainer(GRPOTrainer):
    """GRPO with one expert solution mixed into every group and LUFFY's shaped off-policy loss.

    Construct it with ``rollout_func=expert_rollout(expert_of)``.
    """

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        output["off_policy"] = self._expert_rows.to(output["advantages"].device)  # rows shuffle together
        return output

    def _compute_loss(self, model, inputs):
        off = inputs["off_policy"]
        loss = super()._compute_loss(model, {**inputs, "advantages": inputs["advantages"] * ~off})
        if not off.any():
            return loss
        prompt_ids, completion_ids = inputs["prompt_ids"][off], inputs["completion_ids"][off]
        mask = inputs["completion_mask"][off]
        attention = torch.cat([inputs["prompt_mask"][off], mask], dim=1)
        logps = self._get_per_token_logps_and_entropies(model, torch.cat([prompt_ids, completion_ids], dim=1),
                                                        attention, completion_ids.size(1))[0]
        normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
        if model.training:  # as TRL's dapo loss
            normalizer = normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation
        return loss + luffy_off_policy_loss(logps, inputs["advantages"][off], mask, normalizer)


# -- ReLIFT --------------------------------------------------------------------------------------------
class FailureRecorder:
    """Wraps a reward function; records every prompt's rewards of the current step."""

    def __init__(self, reward_func: Callable):
        self.reward_func = reward_func
        self.__name__ = getattr(reward_func, "__name__", "reward")  # TRL logs rewards by name
        self.rewards: dict[str, list[float]] = defaultdict(list)

    def __call__(self, prompts, completions, **kwargs):
        rewards = self.reward_func(prompts=prompts, completions=completions, **kwargs)
        for prompt, reward in zip(prompts, rewards):
            self.rewards[prompt].append(float(reward))
        return rewards

    def failed(self) -> list[str]:
        """The prompts of this step whose rewards were all 0, in order; clears the record."""
        out = [p for p, r in self.rewards.items() if max(r) <= 0.0]
        self.rewards.clear()
        return out


def relift_sft_loss(model, tokenizer, prompts: list[str], completions: list[str]) -> torch.Tensor:
    """ReLIFT's SFT loss on expert solutions: token-mean NLL of the completion tokens (EOS
    included) minus 0.001 x their mean entropy."""
    rows = [(tokenizer(p)["input_ids"], expert_completion_ids(tokenizer, c)) for p, c in zip(prompts, completions)]
    length = max(len(p) + len(c) for p, c in rows)
    ids = torch.full((len(rows), length), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    attention = torch.zeros_like(ids)
    for i, (p, c) in enumerate(rows):
        ids[i, :len(p) + len(c)] = torch.tensor(p + c)
        labels[i, len(p):len(p) + len(c)] = torch.tensor(c)
        attention[i, :len(p) + len(c)] = 1
    device = next(model.parameters()).device
    logits = model(input_ids=ids.to(device), attention_mask=attention.to(device)).logits[:, :-1].float()
    target = labels[:, 1:].to(device)
    mask = target != -100
    logp = torch.log_softmax(logits, dim=-1)
    nll = -logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    count = mask.sum().clamp(min=1)
    return (nll * mask).sum() / count - RELIFT_ENTROPY * (entropy * mask).sum() / count


class ReLIFTCallback(TrainerCallback):
    """After each RL step: the prompts whose rollouts all failed join the front of the buffer;
    whenever it holds ``buffer_size`` entries or more, one SFT step on the newest ``buffer_size``,
    which leave it. The SFT step has its own AdamW with the RL optimizer's settings (learning rate, betas,
    weight decay from the trainer's ``args``) and gradient clip 1.0. ``sft_at`` lists the RL steps
    that an SFT step followed."""

    def __init__(self, recorder: FailureRecorder, expert_of: dict[str, str], tokenizer, *, buffer_size: int):
        if buffer_size < 1:
            raise ValueError(f"buffer_size={buffer_size} must be at least 1")
        self.recorder, self.expert_of, self.tokenizer = recorder, expert_of, tokenizer
        self.buffer_size = buffer_size
        self.buffer: list[str] = []
        self.optimizer = None
        self.sft_at: list[int] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.buffer = self.recorder.failed() + self.buffer  # newest first, as the official trainer
        if len(self.buffer) >= self.buffer_size:
            self.sft_step(model, self.buffer[:self.buffer_size], args)
            self.sft_at.append(state.global_step)
            self.buffer = self.buffer[self.buffer_size:]

    def sft_step(self, model, prompts: list[str], args) -> float:
        if self.optimizer is None:
            params = [p for p in model.parameters() if p.requires_grad]
            self.optimizer = torch.optim.AdamW(params, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                               eps=args.adam_epsilon, weight_decay=args.weight_decay)
        was_training = model.training
        model.train()
        loss = relift_sft_loss(model, self.tokenizer, prompts, [self.expert_of[p] for p in prompts])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]],
                                       RELIFT_MAX_GRAD_NORM)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        model.train(was_training)
        return float(loss.detach())


# -- wiring ----------------------------------------------------------------------------------------------
def grpo_parts(method: str, expert_of: dict[str, str], tokenizer, reward_func: Callable, *,
               buffer_size: int) -> dict:
    """What ``rl.run_grpo`` needs to run ``method`` (``luffy`` or ``relift``): ``trainer_class``,
    ``reward_func``, ``rollout_func`` and extra ``callbacks``."""
    if method == "luffy":
        return {"trainer_class": LUFFYTrainer, "reward_func": reward_func, "rollout_func": expert_rollout(expert_of),
                "callbacks": []}
    if method == "relift":
        recorder = FailureRecorder(reward_func)
        callback = ReLIFTCallback(recorder, expert_of, tokenizer, buffer_size=buffer_size)
        return {"trainer_class": GRPOTrainer, "reward_func": recorder, "rollout_func": None, "callbacks": [callback]}
    raise ValueError(f"method={method!r} is not one of {UNIFIED}")
