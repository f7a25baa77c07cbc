"""Prompting and in-context learning, measured: prompts built from demonstrations, labels scored.

*Zero-shot*: the prompt holds a task description and the query. *Few-shot*: it also holds k
demonstrations (input, output) written in the same :class:`Template`. Both are inference: no
weight changes (:func:`weights_fingerprint` before and after proves it); the demonstrations only
condition the next-token distribution p(y | prompt).

A classification query is answered by scoring every candidate label as the continuation of the
prompt, log p(label | prompt) = Σ_t log p(label_t | prompt, label_<t), and taking the best one
(GPT-3's multiple-choice evaluation; lm-evaluation-harness's ``loglikelihood``).
:func:`label_logprobs` does it in one batched forward pass; :func:`evaluate_icl` scores a whole
test set, computing the demonstrations (the prefix every query shares) only once.
"""

from __future__ import annotations

import hashlib
import random
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ._checks import check_int, check_module, check_sequence, check_str
from ._torch import eval_mode, model_device, pad_id
from .modelinfo import cache_keyword, output_cache

__all__ = [
    "Template",
    "few_shot_prompt",
    "label_logprobs",
    "ICLResult",
    "evaluate_icl",
    "sample_demonstrations",
    "ICLSweep",
    "icl_sweep",
    "weights_fingerprint",
    "ALPACA_PROMPT",
    "ALPACA_PROMPT_NO_INPUT",
    "alpaca_text",
]


@dataclass(frozen=True)
class Template:
    """How one example is written, and how examples are joined into a prompt.

    ``example``: a format string with the fields ``{input}`` and ``{output}``, ending with
    ``{output}`` (e.g. ``"Review: {input}\\nSentiment: {output}"``). ``instruction``: the task
    description that opens the prompt ("" for none). ``separator``: text between the parts.
    The query is ``example`` cut before ``{output}``; spaces at the cut move to the answer
    (``"Sentiment:"`` + ``" positive"``), so the label is scored as the model would write it.
    """

    example: str = "Input: {input}\nOutput: {output}"
    instruction: str = ""
    separator: str = "\n\n"

    def __post_init__(self):
        check_str("example", self.example)
        check_str("instruction", self.instruction, allow_empty=True)
        check_str("separator", self.separator, allow_empty=True)
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(self.example) if f is not None]
        except ValueError as e:
            raise ValueError(f"example is not a valid format string: {e}") from None
        if sorted(fields) != ["input", "output"] or not self.example.endswith("{output}"):
            raise ValueError(f"example must contain {{input}} once and end with {{output}}, got {self.example!r}")

    def query(self, input: str) -> str:
        """The example up to its answer, without trailing spaces: what the model reads."""
        check_str("input", input, allow_empty=True)
        return self.example[: -len("{output}")].format(input=input).rstrip(" ")

    def answer(self, output: str) -> str:
        """The continuation the model should write: the spaces cut from the query + ``output``."""
        check_str("output", output)
        head = self.example[: -len("{output}")]
        return " " * (len(head) - len(head.rstrip(" "))) + output

    def demonstration(self, input: str, output: str) -> str:
        """One worked example: ``query(input) + answer(output)`` (= ``example`` filled in)."""
        return self.query(input) + self.answer(output)


def _as_template(template) -> Template:
    if isinstance(template, Template):
        return template
    if isinstance(template, str):
        return Template(example=template)
    raise TypeError(f"template must be a Template or an example format string, got {type(template).__name__}")


def _pair(item, name: str) -> tuple[str, str]:
    """An (input, output) pair from a 2-tuple or a dict with the keys input/output."""
    if isinstance(item, Mapping):
        if "input" not in item or "output" not in item:
            raise ValueError(f"{name} must have the keys 'input' and 'output', got {sorted(item)}")
        pair = (item["input"], item["output"])
    elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2:
        pair = tuple(item)
    else:
        raise TypeError(f"{name} must be an (input, output) pair or a dict with input/output, got {item!r}")
    return check_str(f"{name} input", pair[0], allow_empty=True), check_str(f"{name} output", pair[1])


def few_shot_prompt(demonstrations, query: str, *, template) -> str:
    """The prompt for ``query``: instruction, the demonstrations, then the query, joined by the separator.

    ``demonstrations``: (input, output) pairs or dicts (an empty list gives the zero-shot
    prompt: the task description and the query only). ``template``: a :class:`Template` or an
    example format string. The prompt ends where the model's answer starts.
    """
    template = _as_template(template)
    check_str("query", query, allow_empty=True)
    if isinstance(demonstrations, (str, Mapping)) or not isinstance(demonstrations, Sequence):
        raise TypeError(f"demonstrations must be a list of (input, output) pairs, got {type(demonstrations).__name__}")
    parts = [template.instruction] if template.instruction else []
    parts += [template.demonstration(*_pair(d, f"demonstrations[{i}]")) for i, d in enumerate(demonstrations)]
    parts.append(template.query(query))
    return template.separator.join(parts)


def _check_labels(labels) -> list[str]:
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise TypeError(f"labels must be a list of strings, got {type(labels).__name__}")
    if len(labels) == 0:
        raise ValueError("labels must be a non-empty list of strings (the candidate answers)")
    return [check_str(f"labels[{i}]", label) for i, label in enumerate(labels)]


def _ids(tokenizer, text: str, *, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


@torch.no_grad()
def _continuation_logprobs(model, prefix: list[int], items: list[tuple[list[int], list[int]]],
                           pad_token_id: int) -> torch.Tensor:
    """Σ_t log p(cont_t | prefix, context, cont_<t) for each ``(context, cont)`` in ``items``.

    One forward pass over one row per distinct ``context + cont[:-1]`` (right-padded): labels
    that differ only in their last token share a row, so single-token labels cost one row per
    context. A non-empty ``prefix`` (shared by every item) is run once and its key/value cache
    repeated for every row. Every context must hold at least one token. Returns float32 (n_items,).
    """
    device = model_device(model)
    rows: dict[tuple[int, ...], int] = {}
    where = []  # (row, first position predicting cont, cont)
    for context, cont in items:
        row = tuple(context + cont[:-1])
        where.append((rows.setdefault(row, len(rows)), len(context) - 1, cont))
    length = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), length), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for row, i in rows.items():
        input_ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    input_ids, mask = input_ids.to(device), mask.to(device)
    kwargs = {}
    if prefix:
        out = model(input_ids=torch.tensor([prefix], device=device), use_cache=True)
        cache = output_cache(out)
        cache.batch_repeat_interleave(len(rows))  # every row continues the same prefix
        mask = torch.cat([torch.ones((len(rows), len(prefix)), dtype=torch.long, device=device), mask], dim=1)
        kwargs = {cache_keyword(model): cache, "use_cache": True}
    first = min(start for _, start, _ in where)
    # Only positions from `first` on predict a label token: the LM head skips the others.
    out = model(input_ids=input_ids, attention_mask=mask, logits_to_keep=length - first, **kwargs)
    logits = out.logits.float()
    log_z = torch.logsumexp(logits, dim=-1)  # (rows, kept positions)
    scores = []
    for row, start, cont in where:
        pos = torch.arange(start - first, start - first + len(cont), device=device)
        targets = torch.tensor(cont, device=device)
        scores.append((logits[row, pos, targets] - log_z[row, pos]).sum())
    return torch.stack(scores)


def label_logprobs(model, tokenizer, prompt: str, labels) -> torch.Tensor:
    """Total log-probability of each label's tokens as the continuation of ``prompt``.

    ``prompt`` is tokenised as the tokenizer does by default, each label separately without
    special tokens, and the label's ids follow the prompt's: write labels as they follow the
    prompt (``" positive"`` after ``"Sentiment:"``). One batched forward pass scores every label
    (labels that differ only in their last token share a row); the result equals scoring each
    ``prompt + label`` on its own. Returns a float32 tensor ``(len(labels),)`` on the model's
    device, in nats. Raises ``ValueError`` for an empty prompt or label list, or an empty label.
    """
    check_module("model", model)
    check_str("prompt", prompt)
    labels = _check_labels(labels)
    prompt_ids = _ids(tokenizer, prompt, special=True)
    if not prompt_ids:
        raise ValueError("prompt must tokenize to at least one token")
    items = []
    for i, label in enumerate(labels):
        ids = _ids(tokenizer, label, special=False)
        if not ids:
            raise ValueError(f"labels[{i}] = {label!r} tokenizes to no token")
        items.append((prompt_ids, ids))
    with eval_mode(model):
        return _continuation_logprobs(model, [], items, pad_id(tokenizer, default=0))


@dataclass(frozen=True)
class ICLResult:
    """Accuracy of one prompt setup on a test set: ``logprobs`` (queries, labels) in nats, the
    predicted and the true label of every query, and the prompt of the first query."""

    accuracy: float
    predictions: tuple[str, ...]
    targets: tuple[str, ...]
    logprobs: torch.Tensor
    prompt: str


def evaluate_icl(model, tokenizer, demonstrations, queries, *, template, labels) -> ICLResult:
    """Classify every query by the label with the highest :func:`label_logprobs` under the same prompt.

    ``queries``: (input, output) pairs whose outputs are among ``labels`` (the candidate answers,
    written without the template's spaces: ``"positive"``). Every query's prompt is
    :func:`few_shot_prompt` ``(demonstrations, input)``; the token prefix all prompts share (the
    instruction and the demonstrations) runs through the model once, then all queries and labels
    in one batched pass — the same numbers as :func:`label_logprobs` per query, far cheaper.
    """
    check_module("model", model)
    template = _as_template(template)
    labels = _check_labels(labels)
    check_sequence("queries", queries, what="(input, output) pairs", non_empty=False)
    pairs = [_pair(q, f"queries[{i}]") for i, q in enumerate(queries)]
    if not pairs:
        raise ValueError("queries must be a non-empty list of (input, output) pairs")
    for i, (_, y) in enumerate(pairs):
        if y not in labels:
            raise ValueError(f"queries[{i}] has output {y!r}, which is not one of labels {labels}")
    prompts = [few_shot_prompt(demonstrations, x, template=template) for x, _ in pairs]
    ids = [_ids(tokenizer, p, special=True) for p in prompts]
    # The longest token prefix every prompt shares (leaving each row at least one token of its own).
    shared = min(len(i) for i in ids) - 1
    for other in ids[1:]:
        shared = next((n for n in range(shared) if other[n] != ids[0][n]), shared)
    label_ids = [_ids(tokenizer, template.answer(label), special=False) for label in labels]
    items = [(q[shared:], lab) for q in ids for lab in label_ids]
    with eval_mode(model):
        scores = _continuation_logprobs(model, ids[0][:shared], items, pad_id(tokenizer, default=0))
    scores = scores.view(len(pairs), len(labels))
    predictions = tuple(labels[j] for j in scores.argmax(dim=1).tolist())
    targets = tuple(y for _, y in pairs)
    accuracy = sum(p == t for p, t in zip(predictions, targets)) / len(targets)
    return ICLResult(accuracy, predictions, targets, scores, prompts[0])


def sample_demonstrations(pool, k: int, *, seed: int = 0) -> list[tuple[str, str]]:
    """``k`` demonstrations drawn from ``pool`` without replacement, balanced over the outputs.

    The labels take turns (as even a split as k allows, which label gets the extra one drawn at
    random), then the draw is shuffled: an all-"positive" set would teach the label prior rather
    than the task. Deterministic for a given ``seed``.
    """
    check_sequence("pool", pool, what="(input, output) pairs", non_empty=False)
    check_int("seed", seed)
    pairs = [_pair(p, f"pool[{i}]") for i, p in enumerate(pool)]
    k = check_int("k", k, low=0, high=len(pairs))
    rng = random.Random(seed)
    by_label: dict[str, list[tuple[str, str]]] = {}
    for p in pairs:
        by_label.setdefault(p[1], []).append(p)
    for group in by_label.values():
        rng.shuffle(group)
    order = sorted(by_label)
    rng.shuffle(order)
    drawn: list[tuple[str, str]] = []
    while len(drawn) < k:
        for label in order:
            if by_label[label] and len(drawn) < k:
                drawn.append(by_label[label].pop())
    rng.shuffle(drawn)
    return drawn


@dataclass(frozen=True)
class ICLSweep:
    """Accuracy ``(len(shots), draws)``: row i holds ``shots[i]`` demonstrations, column d draw d
    (its own demonstrations in its own order). Zero-shot has no demonstrations to draw: its one
    accuracy fills the row."""

    shots: tuple[int, ...]
    accuracy: torch.Tensor

    @property
    def mean(self) -> torch.Tensor:
        return self.accuracy.mean(dim=1)

    @property
    def spread(self) -> torch.Tensor:
        """Max - min over the draws, per number of demonstrations."""
        return self.accuracy.amax(dim=1) - self.accuracy.amin(dim=1)


def icl_sweep(model, tokenizer, pool, queries, *, template, labels, shots=(0, 1, 2, 4, 8), draws: int = 3,
              seed: int = 0, progress: bool = False) -> ICLSweep:
    """:func:`evaluate_icl` for each number of demonstrations in ``shots`` and ``draws`` random draws.

    Draw d uses :func:`sample_demonstrations` ``(pool, k, seed=seed + d)``, so the demonstrations
    of a draw grow with k and their order changes from draw to draw.
    """
    check_sequence("pool", pool, what="(input, output) pairs", non_empty=False)
    shots = tuple(check_int(f"shots[{i}]", k, low=0, high=len(pool))
                  for i, k in enumerate(check_sequence("shots", shots, what="numbers of demonstrations")))
    draws = check_int("draws", draws, low=1, high=10_000)  # model, seed: evaluate_icl, sample_demonstrations
    accuracy = torch.zeros(len(shots), draws)
    runs = [(i, d) for i, k in enumerate(shots) for d in range(draws if k else 1)]
    if progress:
        from tqdm.auto import tqdm  # heavy import (probes IPython/ipywidgets): only when a bar is asked for

        runs = tqdm(runs, desc="in-context learning", leave=False)
    for i, d in runs:
        demos = sample_demonstrations(pool, shots[i], seed=seed + d)
        acc = evaluate_icl(model, tokenizer, demos, queries, template=template, labels=labels).accuracy
        accuracy[i, d if shots[i] else slice(None)] = acc
    return ICLSweep(shots, accuracy)


def weights_fingerprint(model) -> str:
    """SHA-256 over every parameter and buffer (names, dtypes, shapes and bytes): equal before and
    after a computation exactly when it changed no weight."""
    check_module("model", model)
    h = hashlib.sha256()
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


#: Alpaca's training prompt (Taori et al., 2023; github.com/tatsu-lab/stanford_alpaca) for an
#: example with an input; its ``text`` field is this prompt followed by the output.
ALPACA_PROMPT = ("Below is an instruction that describes a task, paired with an input that provides further "
                 "context. Write a response that appropriately completes the request.\n\n"
                 "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
#: ... and for an example whose ``input`` is empty.
ALPACA_PROMPT_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately "
                          "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")


def alpaca_text(instruction: str, input: str, output: str) -> str:
    """The ``text`` field of an Alpaca example: the full training prompt followed by the output."""
    check_str("instruction", instruction)
    check_str("input", input, allow_empty=True)
    check_str("output", output, allow_empty=True)
    prompt = ALPACA_PROMPT if input else ALPACA_PROMPT_NO_INPUT
    return prompt.format(instruction=instruction, input=input) + output
