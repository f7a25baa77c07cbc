"""The instruction-tuning set the LoRA notebook fine-tunes on, and how it is fed to a model.

The examples are written by us, not downloaded: :func:`make_date_instructions` generates them
from a seed (rewrite a date such as "March 5, 2021" as "2021-03-05"), ``data/make_instructions.py``
writes them to ``llmlab/datafiles/instructions/{train,heldout}.jsonl`` (shipped with the package,
:mod:`llmlab.paths`) and :func:`load_instructions` reads those files back. Each example follows the
Alpaca format: ``instruction``, ``input``, ``output`` and ``text``, the full prompt template the
model is trained on.

Instruction tuning is supervised next-token prediction on the *response* only:
:func:`tokenize_example` sets the label of every prompt token to ``-100`` (the index PyTorch's
cross-entropy ignores), so the loss is ``-(1/|R|) Σ_{t∈R} log p(y_t | y_<t)`` over the response
tokens R.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from ._checks import check_batch_plan, check_int, check_module, check_path, check_sequence, check_str
from ._torch import IGNORE_INDEX, eval_mode, model_device, pad_id
from .paths import data_path

__all__ = [
    "IGNORE_INDEX",
    "PROMPT_TEMPLATE",
    "format_prompt",
    "make_date_instructions",
    "write_instructions",
    "load_instructions",
    "tokenize_example",
    "InstructionBatch",
    "make_batches",
    "collate",
    "epoch_order",
    "left_pad",
    "greedy_answers",
    "ExactMatch",
    "exact_match",
    "ResponseScores",
    "response_scores",
]

# Alpaca's template (Taori et al., 2023) without its one-sentence preamble, which would double
# the sequence length on a CPU for no gain. ``text`` = prompt + output.
PROMPT_TEMPLATE = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"

_INSTRUCTIONS = [
    "Rewrite the date in ISO format (YYYY-MM-DD).",
    "Convert this date to YYYY-MM-DD.",
    "Give the date as year-month-day (YYYY-MM-DD).",
    "Write this date in ISO 8601 format.",
]
_MONTHS = list(calendar.month_name)[1:]
_MONTHS_ABBR = ["Jan.", "Feb.", "Mar.", "Apr.", "May", "Jun.", "Jul.", "Aug.", "Sep.", "Oct.", "Nov.", "Dec."]


def _date_styles(d: _dt.date) -> list[str]:
    """The human ways of writing ``d`` that the inputs use (all unambiguous)."""
    month, abbr, weekday = _MONTHS[d.month - 1], _MONTHS_ABBR[d.month - 1], calendar.day_name[d.weekday()]
    return [
        f"{month} {d.day}, {d.year}",
        f"{d.day} {month} {d.year}",
        f"{abbr} {d.day}, {d.year}",
        f"{weekday}, {month} {d.day}, {d.year}",
        f"the {d.day}{_ordinal_suffix(d.day)} of {month}, {d.year}",
    ]


def _ordinal_suffix(day: int) -> str:
    if 11 <= day % 100 <= 13:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def format_prompt(instruction: str, input: str = "") -> str:
    """The prompt part of the template (everything the model reads before its answer)."""
    check_str("instruction", instruction)
    check_str("input", input, allow_empty=True)
    return PROMPT_TEMPLATE.format(instruction=instruction, input=input)


def make_date_instructions(n_train: int = 512, n_heldout: int = 64, *, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Generate ``(train, heldout)`` Alpaca-style examples: a date in words -> ``YYYY-MM-DD``.

    Dates are drawn uniformly from 1950-01-01 .. 2049-12-31 with ``random.Random(seed)``, without
    repetition, so no held-out date occurs in the train split. Each example is a dict with keys
    ``instruction``, ``input``, ``output`` and ``text`` (= prompt + output). Deterministic:
    the same arguments give the same examples on every machine (at most 36,524 in all). A data
    generator that only ``data/make_instructions.py`` (through :func:`write_instructions`) and the
    fallback of :func:`load_instructions` run: it trusts its arguments (issue 23).
    """
    first, last = _dt.date(1950, 1, 1), _dt.date(2049, 12, 31)
    n_days = (last - first).days + 1
    rng = random.Random(seed)
    offsets = rng.sample(range(n_days), n_train + n_heldout)
    examples = []
    for offset in offsets:
        d = first + _dt.timedelta(days=offset)
        instruction = rng.choice(_INSTRUCTIONS)
        text_in = rng.choice(_date_styles(d))
        output = d.isoformat()
        examples.append({
            "instruction": instruction,
            "input": text_in,
            "output": output,
            "text": format_prompt(instruction, text_in) + output,
        })
    return examples[:n_train], examples[n_train:]


def write_instructions(folder: str | Path, n_train: int = 512, n_heldout: int = 64, *, seed: int = 0) -> list[Path]:
    """Write ``train.jsonl`` and ``heldout.jsonl`` (one JSON object a line) into ``folder``."""
    folder = Path(folder)  # data/make_instructions.py passes its --out
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, rows in zip(("train", "heldout"), make_date_instructions(n_train, n_heldout, seed=seed)):
        path = folder / f"{split}.jsonl"
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        paths.append(path)
    return paths


def load_instructions(split: str = "train", *, folder: str | Path | None = None) -> list[dict]:
    """The ``split`` ("train" or "heldout") of the instruction set as a list of dicts.

    Reads ``folder/{split}.jsonl`` (default: the copy shipped in the package, ``llmlab/datafiles/instructions``).
    """
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    if folder is not None and not Path(check_path("folder", folder)).is_dir():
        raise ValueError(f"folder={str(folder)!r} does not exist (write one with write_instructions)")
    path = Path(folder) / f"{split}.jsonl" if folder is not None else data_path("instructions", f"{split}.jsonl")
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `python data/make_instructions.py`")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def tokenize_example(example: dict, tokenizer, *, max_length: int | None = None) -> dict[str, list[int]]:
    """Token ids and labels for one example, with the loss masked to the response.

    Returns ``input_ids`` = prompt tokens + response tokens + EOS and ``labels`` of the same
    length, ``-100`` on every prompt token (no loss there) and equal to ``input_ids`` on the
    response and the EOS (so the model learns to stop). The prompt and response are tokenised
    separately so the boundary is exact. ``max_length`` truncates from the right; it must leave
    at least one response token (a prompt of ``max_length`` tokens or more would leave every
    label at -100, and the loss would be NaN), so such an example is refused with ValueError.
    """
    if not isinstance(example, dict) or not {"instruction", "input", "output"} <= set(example):
        raise TypeError(f"example must be a dict with the Alpaca keys instruction/input/output, got {example!r:.80}")
    check_str("output", example["output"], allow_empty=True)
    if max_length is not None:
        check_int("max_length", max_length, low=1)
    if getattr(tokenizer, "eos_token_id", None) is None:
        raise ValueError("tokenizer must define eos_token_id (the response ends with it)")
    prompt_ids = tokenizer(format_prompt(example["instruction"], example["input"]), add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(example["output"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    input_ids = list(prompt_ids) + list(response_ids)
    labels = [IGNORE_INDEX] * len(prompt_ids) + list(response_ids)
    if max_length is not None:
        if len(prompt_ids) >= max_length:
            raise ValueError(f"max_length={max_length} leaves no response token after a prompt of {len(prompt_ids)} tokens")
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "labels": labels}


@dataclass(frozen=True)
class InstructionBatch:
    """A right-padded batch: ``input_ids``, ``attention_mask``, ``labels``, each ``(batch, seq)``."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def to(self, device) -> "InstructionBatch":
        return InstructionBatch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device))

    def as_kwargs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for a Hugging Face causal LM: ``model(**batch.as_kwargs()).loss``."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "labels": self.labels}


def collate(features: list[dict[str, list[int]]], pad_token_id: int) -> InstructionBatch:
    """Right-pad tokenised examples (:func:`tokenize_example`'s dicts of non-empty ``input_ids`` and
    ``labels`` of equal lengths) to the longest one; padding gets mask 0 and label -100. A step of the
    batch makers (:func:`make_batches`, :func:`llmlab.alignment.make_preference_batches`), which build
    ``features`` themselves."""
    length = max(len(f["input_ids"]) for f in features)
    input_ids = torch.full((len(features), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(features), length), dtype=torch.long)
    labels = torch.full((len(features), length), IGNORE_INDEX, dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        input_ids[i, :n] = torch.tensor(f["input_ids"])
        attention_mask[i, :n] = 1
        labels[i, :n] = torch.tensor(f["labels"])
    return InstructionBatch(input_ids, attention_mask, labels)


def make_batches(examples: list[dict], tokenizer, *, batch_size: int, steps: int, seed: int = 0,
                 device=None) -> list[InstructionBatch]:
    """``steps`` batches of ``batch_size`` examples, shuffled by ``seed`` (epoch after epoch)."""
    check_batch_plan(batch_size, steps, seed, max_batch_size=4096, max_steps=100_000)
    if not examples:
        raise ValueError("examples must be a non-empty list")
    pad = pad_id(tokenizer)
    features = [tokenize_example(ex, tokenizer) for ex in examples]
    batches = [collate([features[i] for i in idx], pad)
               for idx in epoch_order(len(features), batch_size=batch_size, steps=steps, seed=seed)]
    return [batch.to(device) for batch in batches] if device is not None else batches


def epoch_order(n: int, *, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """The example indices of ``steps`` batches of ``batch_size``: epoch after epoch, each epoch a fresh
    permutation of ``range(n)`` drawn from a generator seeded with ``seed`` (a batch may span two epochs).
    The batch makers call it with arguments they have checked."""
    g = torch.Generator().manual_seed(seed)
    order: list[int] = []
    batches = []
    for _ in range(steps):
        while len(order) < batch_size:
            order += torch.randperm(n, generator=g).tolist()
        batches.append(order[:batch_size])
        order = order[batch_size:]
    return batches


@dataclass(frozen=True)
class ExactMatch:
    """Held-out exact-match result: ``accuracy`` in [0, 1], the model's answers (stripped) and, per answer,
    whether the model ended its turn (EOS) within the token budget. An answer counts only if both hold."""

    accuracy: float
    predictions: list[str]
    targets: list[str]
    stopped: list[bool] = ()


def left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists as one batch padded on the left with ``pad``, so that every row ends where
    generation starts: ``(input_ids, attention_mask)``, both long tensors of shape (rows, longest)."""
    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, length - len(r):] = torch.tensor(r, dtype=torch.long)
        attention_mask[i, length - len(r):] = 1
    return input_ids, attention_mask


@torch.no_grad()
def _greedy_ids(model, tokenizer, prompt_ids: list[list[int]], max_new_tokens: int) -> list[torch.Tensor]:
    """The token ids greedy ``model.generate`` adds to every prompt (one left-padded batch, eval mode)."""
    pad = pad_id(tokenizer)
    input_ids, attention_mask = left_pad(prompt_ids, pad)
    device = model_device(model)
    with eval_mode(model):
        out = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                             do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=pad,
                             eos_token_id=tokenizer.eos_token_id, temperature=None, top_p=None, top_k=None)
    return [row[input_ids.shape[1]:].cpu() for row in out]


def _check_generation(model, max_new_tokens) -> None:
    """What both greedy evaluations take: a ``model`` (an ``nn.Module``) and ``max_new_tokens`` >= 1."""
    check_module("model", model)
    check_int("max_new_tokens", max_new_tokens, low=1)


def greedy_answers(model, tokenizer, prompt_ids: list[list[int]], *, max_new_tokens: int) -> list[str]:
    """Greedy ``model.generate`` from every prompt (token ids) in one left-padded batch, in eval mode.
    Each answer stops at EOS or after ``max_new_tokens`` and comes back decoded without special
    tokens, stripped."""
    _check_generation(model, max_new_tokens)
    prompt_ids = check_sequence("prompt_ids", prompt_ids, what="token id lists")
    return [tokenizer.decode(row, skip_special_tokens=True).strip()
            for row in _greedy_ids(model, tokenizer, prompt_ids, max_new_tokens)]


def exact_match(model, tokenizer, examples: list[dict], *, max_new_tokens: int = 12,
                batch_size: int = 32) -> ExactMatch:
    """Greedy-decode an answer to every prompt and compare it, stripped, with ``output``.

    Prompts are left-padded in batches so they all end where generation starts; decoding stops
    at EOS or after ``max_new_tokens``. An answer counts only if the model also ended its turn
    (EOS) within ``max_new_tokens``: a model that writes the right date and goes on
    (``'2021-03-05\\n\\n### Output'``) is not right, even where the cut at ``max_new_tokens`` falls
    just after the date and stripping would hide the rest. :func:`response_scores` finds the
    same from one forward pass.
    """
    if not examples:
        raise ValueError("examples must be a non-empty list")
    _check_generation(model, max_new_tokens)
    check_int("batch_size", batch_size, low=1, high=4096)
    predictions, stopped = [], []
    for start in range(0, len(examples), batch_size):
        prompts = [tokenizer(format_prompt(ex["instruction"], ex["input"]), add_special_tokens=False)["input_ids"]
                   for ex in examples[start:start + batch_size]]
        for row in _greedy_ids(model, tokenizer, prompts, max_new_tokens):
            predictions.append(tokenizer.decode(row, skip_special_tokens=True).strip())
            stopped.append(bool((row == tokenizer.eos_token_id).any()))
    targets = [ex["output"] for ex in examples]
    accuracy = sum(p == t and s for p, t, s in zip(predictions, targets, stopped)) / len(targets)
    return ExactMatch(accuracy, predictions, targets, stopped)


@dataclass(frozen=True)
class ResponseScores:
    """Per example, from one teacher-forced pass: ``nll`` (n,) the mean negative log-likelihood of its
    response tokens (end-of-text included), ``exact`` (n,) whether every one of them is the model's
    most likely next token. Float and bool CPU tensors, examples in batch order."""

    nll: torch.Tensor
    exact: torch.Tensor


@torch.no_grad()
def response_scores(model, batches) -> ResponseScores:
    """Score every example's response with one forward pass each batch (teacher forcing, eval mode).

    ``batches``: :class:`InstructionBatch` es (:func:`make_batches`), labels -100 outside the
    response. ``exact`` is greedy exact match at the token level: greedy decoding writes the response
    and then stops iff, at every response position, the model's top next token is the right one —
    so one forward pass tells what :func:`exact_match` finds by generating (they differ only for an
    answer that ends with whitespace before its end-of-text, which ``exact_match`` strips). ``nll`` gives
    the per-example held-out loss, for an interval over examples.
    """
    check_module("model", model)
    if isinstance(batches, InstructionBatch) or not hasattr(batches, "__iter__"):
        raise TypeError(f"batches must be a list of InstructionBatch (see make_batches), got {type(batches).__name__}")
    nll, exact = [], []
    with eval_mode(model):
        for i, batch in enumerate(batches):
            if not isinstance(batch, InstructionBatch):
                raise TypeError(f"batches[{i}] must be an InstructionBatch (see make_batches), got {type(batch).__name__}")
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].float()
            labels = batch.labels[:, 1:]
            scored = labels != IGNORE_INDEX
            if not bool(scored.any(dim=1).all()):
                raise ValueError(f"batches[{i}] has an example without a response token (every label is -100)")
            token_nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels.clamp_min(0), reduction="none")
            nll.append(((token_nll * scored).sum(1) / scored.sum(1)).cpu())
            exact.append(((logits.argmax(-1) == labels) | ~scored).all(1).cpu())
    return ResponseScores(nll=torch.cat(nll), exact=torch.cat(exact))
