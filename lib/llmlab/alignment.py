"""Human alignment, small: Direct Preference Optimization (DPO) on preference pairs.

RLHF (Ouyang et al., 2022) aligns a model in three stages: supervised fine-tuning → a reward
model r(x, y) fit to human preference pairs (y_w ≻ y_l) → PPO maximising r with a KL penalty to
the SFT model. DPO (Rafailov et al., 2023) solves the same KL-regularised objective in closed form
and trains on the pairs directly:

    L = −log σ(β [(log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x))])

where log π(y|x) is the *summed* log-probability of the response tokens (``_sequence_logps``)
and r̂(x, y) = β (log π(y|x) − log π_ref(y|x)) is the implicit reward. :func:`dpo_loss` matches
the paper's formula and TRL's ``loss_type="sigmoid"``; ``tests/test_alignment.py`` checks both.

β prices the departure from the reference: max E[r] − β KL(π ‖ π_ref) is reached by π* ∝ π_ref
exp(r / β) (:func:`optimal_policy`); a DPO policy trained with β is that optimum for its implicit reward.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ._checks import (check_batch_plan, check_finite_tensor, check_float, check_int, check_module, check_optimizer,
                      check_same_length, check_sequence, check_str, check_tensor)
from ._torch import IGNORE_INDEX, eval_mode, model_device, pad_id, read_floats
from .data import InstructionBatch, collate, epoch_order, greedy_answers
from .modelinfo import check_token_ids, context_size
from .timing import Stopwatch

__all__ = [
    "dpo_loss",
    "chat_prompt",
    "tokenize_preference",
    "collate_preferences",
    "make_preference_batches",
    "reference_logps",
    "PreferenceEval",
    "evaluate_preferences",
    "DPOResult",
    "train_dpo",
    "stop_probabilities",
    "generate_answers",
    "OptimalPolicy",
    "optimal_policy",
]


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             reference_chosen_logps: torch.Tensor, reference_rejected_logps: torch.Tensor, *,
             beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DPO loss of each preference pair, and the implicit rewards of both answers.

    Inputs: summed response log-probabilities, each of shape ``(pairs,)``, under the policy π
    and the frozen reference π_ref. ``beta`` > 0: the strength of the KL constraint (a small β
    lets π move further from π_ref). Returns ``(losses, chosen_rewards, rejected_rewards)``, each
    ``(pairs,)``: losses = −log σ(β[(π_w − ref_w) − (π_l − ref_l)]) (computed as softplus, finite for
    any margin), rewards = β(π − ref), detached as in TRL (they are metrics, not loss terms). A NaN
    log-probability gives NaN out for its pair (as in TRL).
    """
    beta = check_float("beta", beta, low=0, low_open=True)
    named = {"policy_chosen_logps": policy_chosen_logps, "policy_rejected_logps": policy_rejected_logps,
             "reference_chosen_logps": reference_chosen_logps, "reference_rejected_logps": reference_rejected_logps}
    for name, t in named.items():
        check_tensor(name, t, dim=1, floating=True, min_numel=1)
    check_same_length(**named)
    return _dpo_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta)


def _dpo_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    """:func:`dpo_loss` as the training and evaluation loops call it: inputs already checked."""
    chosen_logratios = policy_chosen_logps - reference_chosen_logps  # log π(y_w|x)/π_ref(y_w|x)
    rejected_logratios = policy_rejected_logps - reference_rejected_logps
    losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def _batch_tensors(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """``(input_ids, attention_mask, labels, first)`` of ``batch``, checked: 2-D token ids, all three the
    same shape, every row with a response whose first label is not the row's first token; ``first`` is
    the earliest scored position over the batch (read once here, so scoring the batch needs no host sync)."""
    if isinstance(batch, InstructionBatch):
        input_ids, attention_mask, labels = batch.input_ids, batch.attention_mask, batch.labels
    elif isinstance(batch, Mapping) and {"input_ids", "labels"} <= set(batch):
        input_ids, labels = batch["input_ids"], batch["labels"]
        attention_mask = batch.get("attention_mask", torch.ones_like(input_ids))
    else:
        raise TypeError(f"batch must be an InstructionBatch or a dict with input_ids and labels, got {batch!r:.40}")
    check_tensor("input_ids", input_ids, dim=2, integer=True, min_numel=1)
    if labels.shape != input_ids.shape or attention_mask.shape != input_ids.shape:
        raise ValueError(f"labels and attention_mask must have the shape of input_ids {tuple(input_ids.shape)}")
    scored = labels != IGNORE_INDEX
    if scored[:, 0].any():
        raise ValueError("labels: the first token of a row has no context to predict it from: its label must be -100")
    if not scored.any(dim=1).all():
        raise ValueError("labels: every row needs at least one response token (a label other than -100)")
    return input_ids, attention_mask, labels, int(scored.float().argmax(dim=1).min())


def _sequence_logps(model, input_ids, attention_mask, labels, first: int) -> torch.Tensor:
    """Σ_t log π(y_t | x, y_<t) over the response tokens of every row: shape ``(batch,)``, float32.

    The tensors of a batch :func:`_batch_tensors` checked (``labels`` −100 on prompt and padding
    tokens, aligned with ``input_ids`` as in Hugging Face: position t − 1 predicts label t);
    ``first``: the earliest scored position, so only positions from it on go through the LM head.
    Gradients flow (DPO trains through it); wrap in ``torch.no_grad()`` to score.
    """
    keep = input_ids.shape[1] - first + 1  # logits from position first - 1 on
    logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep).logits[:, :-1].float()
    targets = labels[:, first:]
    mask = targets != IGNORE_INDEX
    token_logps = logits.gather(-1, targets.clamp(min=0)[..., None])[..., 0] - torch.logsumexp(logits, dim=-1)
    return (token_logps * mask).sum(dim=1)


DEFAULT_SYSTEM = "You are a helpful assistant."


def chat_prompt(tokenizer, user: str, *, system: str | None = DEFAULT_SYSTEM) -> str:
    """The prompt an instruct model answers: its chat template with ``user``'s message and the
    assistant's turn opened (``system`` replaces the template's default system message). A step of
    :func:`tokenize_preference` and :func:`generate_answers`, which check ``user``."""
    if not callable(getattr(tokenizer, "apply_chat_template", None)):
        raise TypeError(f"tokenizer must be a Hugging Face tokenizer with a chat template, got {type(tokenizer).__name__}")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def tokenize_preference(example: Mapping, tokenizer, *, chat: bool = True) -> dict[str, list[int]]:
    """``prompt_ids``, ``chosen_ids``, ``rejected_ids`` of one pair ``{"prompt", "chosen", "rejected"}``.

    The prompt goes through :func:`chat_prompt` (``chat=True``) or is used as it is; each answer is
    tokenised on its own and ends with EOS, so the model also learns where an answer stops.
    """
    if not isinstance(example, Mapping):
        raise TypeError(f"example must be a dict with prompt/chosen/rejected, got {type(example).__name__}")
    for key in ("prompt", "chosen", "rejected"):
        if key not in example:
            raise ValueError(f"example must have the keys prompt, chosen and rejected; missing {key!r}")
        check_str(key, example[key])
    if getattr(tokenizer, "eos_token_id", None) is None:
        raise ValueError("tokenizer must define eos_token_id (each answer ends with it)")
    prompt = chat_prompt(tokenizer, example["prompt"]) if chat else example["prompt"]
    ids = {"prompt_ids": list(tokenizer(prompt, add_special_tokens=False)["input_ids"])}
    for key in ("chosen", "rejected"):
        ids[f"{key}_ids"] = list(tokenizer(example[key], add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]
    return ids


def collate_preferences(features: list[dict[str, list[int]]], pad_token_id: int) -> InstructionBatch:
    """One right-padded batch of 2·pairs rows: all chosen answers first, then all rejected ones
    (TRL's layout, so one forward pass scores both); labels are −100 on prompts and padding.
    ``features``: what :func:`tokenize_preference` returns (non-empty prompts and answers)."""
    rows = []
    for key in ("chosen_ids", "rejected_ids"):
        for f in features:
            rows.append({"input_ids": f["prompt_ids"] + f[key],
                         "labels": [IGNORE_INDEX] * len(f["prompt_ids"]) + f[key]})
    return collate(rows, pad_token_id)


def make_preference_batches(examples: list[Mapping], tokenizer, *, batch_size: int, steps: int, seed: int = 0,
                            chat: bool = True, device=None) -> list[InstructionBatch]:
    """``steps`` batches of ``batch_size`` pairs (2·batch_size rows), shuffled by ``seed`` epoch after epoch."""
    check_batch_plan(batch_size, steps, seed, max_batch_size=4096, max_steps=1_000_000)
    examples = check_sequence("examples", examples, what="preference pairs")
    pad = pad_id(tokenizer)
    features = [tokenize_preference(ex, tokenizer, chat=chat) for ex in examples]
    batches = [collate_preferences([features[i] for i in idx], pad)
               for idx in epoch_order(len(features), batch_size=batch_size, steps=steps, seed=seed)]
    return [batch.to(device) for batch in batches] if device is not None else batches


def _half(batch: tuple, rows: slice) -> InstructionBatch:
    """Rows ``rows`` of a right-padded batch ``(input_ids, attention_mask, labels, first)``, cut after their
    own longest row (no all-padding columns)."""
    input_ids, attention_mask, labels, _ = batch
    mask = attention_mask[rows]
    width = int(mask.sum(dim=1).max())
    return InstructionBatch(input_ids[rows, :width], mask[:, :width], labels[rows, :width])


def _pair_logps(model, prepared) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) summed response log-probs of a preference batch prepared by :func:`_prepare_pairs`
    (each half scored unpadded)."""
    chosen, rejected = prepared
    return _sequence_logps(model, *chosen), _sequence_logps(model, *rejected)


def _prepare_pairs(model, batches, reference=..., beta: float = 0.1) -> tuple[list[tuple], float]:
    """Every preference batch checked once, before any forward pass (the loops then never sync), with
    (unless left out: ``...``) the ``reference`` log-probabilities of the same batches and ``beta`` > 0: what
    :func:`reference_logps`, :func:`evaluate_preferences` and :func:`train_dpo` take. Returns
    ``(prepared batches, beta)``."""
    beta = check_float("beta", beta, low=0, low_open=True)
    batches = check_sequence("batches", batches, what="preference batches")
    prepared = []
    for b in batches:
        full = _batch_tensors(b)
        check_token_ids(model, full[0])
        n = full[0].shape[0] // 2
        prepared.append((_batch_tensors(_half(full, slice(0, n))), _batch_tensors(_half(full, slice(n, 2 * n)))))
    if reference is not ...:
        check_same_length(batches=prepared, reference=check_sequence("reference", reference, what="log-probabilities"))
    return prepared, beta


@torch.no_grad()
def reference_logps(model, batches) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(chosen, rejected)`` summed log-probabilities of every batch under ``model``, in eval mode
    and without gradients: run before training, while the policy still is the reference
    (TRL's ``precompute_ref_log_probs``)."""
    prepared, _ = _prepare_pairs(model, batches)
    with eval_mode(model):
        return [_pair_logps(model, p) for p in prepared]


@dataclass(frozen=True)
class PreferenceEval:
    """DPO's metrics on a set of pairs: the implicit rewards of every pair, their mean margin,
    the fraction of pairs whose chosen answer gets the larger reward, and the mean loss."""

    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    margin: float
    accuracy: float
    loss: float


@torch.no_grad()
def evaluate_preferences(model, batches, reference, *, beta: float = 0.1) -> PreferenceEval:
    """Score ``batches`` (from :func:`make_preference_batches`) against ``reference``
    (:func:`reference_logps` of the same batches) with :func:`dpo_loss`."""
    prepared, beta = _prepare_pairs(model, batches, reference, beta)
    with eval_mode(model):
        losses, chosen, rejected = [], [], []
        for batch, (ref_c, ref_r) in zip(prepared, reference):
            loss, c, r = _dpo_loss(*_pair_logps(model, batch), ref_c, ref_r, beta)
            losses.append(loss), chosen.append(c), rejected.append(r)
    chosen, rejected = torch.cat(chosen), torch.cat(rejected)
    return PreferenceEval(chosen, rejected, margin=(chosen - rejected).mean().item(),
                          accuracy=(chosen > rejected).float().mean().item(), loss=torch.cat(losses).mean().item())


@dataclass(frozen=True)
class DPOResult:
    """Per-step training loss, mean reward margin, reward accuracy and wall time of :func:`train_dpo`."""

    losses: tuple[float, ...]
    margins: tuple[float, ...]
    accuracies: tuple[float, ...]
    step_times: tuple[float, ...]


def train_dpo(model, batches, optimizer, *, reference, beta: float = 0.1, progress: bool = False) -> DPOResult:
    """One DPO step per batch: mean of :func:`dpo_loss` against the precomputed ``reference``
    (:func:`reference_logps` of the same batches), backward, optimizer step, zero_grad."""
    check_optimizer("optimizer", optimizer)
    prepared, beta = _prepare_pairs(model, batches, reference, beta)
    device = model_device(model)
    steps = list(zip(prepared, reference))
    if progress:
        from tqdm.auto import tqdm  # heavy import (probes IPython/ipywidgets): only when a bar is asked for

        steps = tqdm(steps, desc="DPO", leave=False)
    losses, margins, accuracies, times = [], [], [], []
    model.train()
    for batch, (ref_c, ref_r) in steps:
        with Stopwatch(device) as watch:
            loss, chosen, rejected = _dpo_loss(*_pair_logps(model, batch), ref_c, ref_r, beta)
            loss.mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        times.append(watch.seconds)
        # Read after the loop: no extra host sync per step.
        losses.append(loss.detach().mean())
        margins.append((chosen - rejected).detach().mean())
        accuracies.append((chosen > rejected).float().mean())
    model.eval()
    return DPOResult(read_floats(losses), read_floats(margins), read_floats(accuracies), tuple(times))


@torch.no_grad()
def stop_probabilities(model, tokenizer, examples, *, chat: bool = True) -> torch.Tensor:
    """P(EOS | prompt, chosen answer) for each pair of ``examples`` (``{"prompt", "chosen", "rejected"}``):
    how likely the model ends its turn right after the (concise) chosen answer. One batched forward
    pass; shape ``(pairs,)``, float32, on the model's device."""
    check_module("model", model)
    examples = check_sequence("examples", examples, what="preference pairs")
    rows = []
    for ex in examples:
        ids = tokenize_preference(ex, tokenizer, chat=chat)
        seq = ids["prompt_ids"] + ids["chosen_ids"]  # the chosen answer ends with EOS: the only label
        rows.append({"input_ids": seq, "labels": [IGNORE_INDEX] * (len(seq) - 1) + [seq[-1]]})
    pad = pad_id(tokenizer)
    batch = collate(rows, pad).to(model_device(model))
    with eval_mode(model):
        return _sequence_logps(model, *_batch_tensors(batch)).exp()


def generate_answers(model, tokenizer, prompts: list[str], *, max_new_tokens: int = 48, chat: bool = True) -> list[str]:
    """Greedy answers to ``prompts`` (through :func:`chat_prompt` when ``chat``), left-padded in one
    batch, each stopping at EOS or after ``max_new_tokens``."""
    check_int("max_new_tokens", max_new_tokens, low=1, high=context_size(model) or 1_000_000)  # model: greedy_answers
    prompts = [check_str(f"prompts[{i}]", p) for i, p in enumerate(check_sequence("prompts", prompts, what="strings"))]
    texts = [chat_prompt(tokenizer, p) if chat else p for p in prompts]
    ids = [list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    return greedy_answers(model, tokenizer, ids, max_new_tokens=max_new_tokens)


@dataclass(frozen=True)
class OptimalPolicy:
    """π* and π_ref over K candidates (``probs``, ``reference_probs``), KL(π* ‖ π_ref) in nats, E_π*[r]."""
    probs: torch.Tensor
    reference_probs: torch.Tensor
    kl: torch.Tensor
    expected_reward: torch.Tensor


def optimal_policy(reference_logps: torch.Tensor, rewards: torch.Tensor, *, beta: float) -> OptimalPolicy:
    """The maximiser of E_π[r] − β KL(π ‖ π_ref) over ``K`` candidates (last dimension): π* =
    softmax(log π_ref + r / β), the closed form DPO rests on (Rafailov et al., 2023, eq. 4), with π_ref
    renormalised over the candidates. ``reference_logps``, ``rewards``: (..., K). With DPO's implicit
    reward β_train (log π − log π_ref) and ``beta = β_train``, π* is the trained policy; β → ∞ gives π_ref."""
    beta = check_float("beta", beta, low=0, low_open=True)
    for name, t in (("reference_logps", reference_logps), ("rewards", rewards)):
        check_finite_tensor(name, check_tensor(name, t, floating=True, min_numel=1))
    if reference_logps.shape != rewards.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)} must have the shape of reference_logps "
                         f"{tuple(reference_logps.shape)}: (..., K), one entry per candidate")
    log_ref = torch.log_softmax(reference_logps.double(), dim=-1)
    log_pi = torch.log_softmax(log_ref + rewards.double() / beta, dim=-1)
    probs = log_pi.exp()
    return OptimalPolicy(probs, log_ref.exp(), (probs * (log_pi - log_ref)).sum(-1), (probs * rewards.double()).sum(-1))
