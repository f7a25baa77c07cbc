"""Which cells of a widget notebook the browser test runs, and the record of how notebooks 02-12 were tagged.

The rule (``tests/test_browser.py`` runs it; ``tests/test_browser_cells.py`` checks it without a browser):
the browser test executes, in notebook order, the **setup cells** — the first two code cells, the
bootstrap and the setup/imports cell — and every cell whose metadata carries the tag ``browser``
(``"metadata": {"tags": ["browser"]}``): the cells that compute the widget's inputs, the cell that
builds and displays it, and the cell that drives it once from code. Together they must run
standalone, in a fresh kernel, in about 20 s on 2 cores.

Tags are the source of truth; a notebook's author sets them (JupyterLab: the property inspector's
"Cell Tags", or edit the ``.ipynb``). :data:`TAGGED` records, by the first line of each cell, which
cells of notebooks 02-12 issue 28 tagged; after a merge that lost the tags (another branch rewrote a
notebook), run ``python tests/browser_cells.py`` to tag them again (metadata only, nothing else
changes) and ``python tests/browser_cells.py --check`` to list what differs.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TAG = "browser"
#: The bootstrap cell and the setup/imports cell: always part of the subset.
SETUP_CELLS = 2

#: notebook -> the first line of each cell (after the setup cells) that the widget needs, in order.
TAGGED = {
    "02_decoding.ipynb": [
        "from llmlab.widgets import decoding_widget",
        "# Drive the widget from code (what a person does with the sliders) and check the readout follows.",
    ],
    "03_cosine_lr.ipynb": [
        "explorer = cosine_explorer(peak=0.05, t_max=380, eta_min=0.0, warmup=20)  # cosine to 0 exactly at the end of 400 updates",
        "before, before_text = dict(explorer.last), explorer.readout_text",
    ],
    "04_grad_accumulation_batchnorm.ipynb": [
        'explorer = accumulation_explorer(batch_size=BATCH, steps=4, kind="cnn_bn")',
        "# Drive it from code, as a person would: GroupNorm, K = 8, loss not divided by K",
    ],
    "05_checkpointing_memory.ipynb": [
        "w = checkpointing_widget(",
        "before = w.readout.value",
    ],
    "06_truncated_svd_images.ipynb": [
        'explorer = svd_explorer(IMAGES, image="astronaut", k=20, device=DEVICE)',
        "# What moving the slider and choosing an image do, driven from code (CI runs these callbacks).",
    ],
    # The rank explorer approximates the ΔW of a full fine-tuning run: the model, the data and the full
    # fine-tune's learning-rate sweep (its validation loss picks the run) feed it; the LoRA sweep does not.
    "07_lora.ipynb": [
        "model, tokenizer = load_model(device=DEVICE)",
        'train, heldout = data.load_instructions("train"), data.load_instructions("heldout")',
        'testset, valset = heldout[:CFG["n_test"]], heldout[-CFG["n_val"]:]',
        'batches = data.make_batches(train, tokenizer, batch_size=CFG["batch_size"], steps=CFG["steps"]',
        "# ΔW of one query projection (layer 15)",
        "explorer = lora_rank_explorer(delta_W, shapes, r=R)",
        "first = explorer.readout.value",
    ],
    "08_mixed_precision.ipynb": [
        "from llmlab.widgets import precision_widget",
    ],
    # The mask explorer runs the trained masked LM: the corpus and both training runs feed it.
    "09_llm_anatomy.ipynb": [
        "sentences = A.load_animal_corpus()",
        'sentence = ["[BOS]", "the", "dog", "barks", "loudly", ".", "[EOS]"]',
        "seen = {}",
    ],
    "10_tokenization.ipynb": [
        "start = time.perf_counter()",
        'held_out = samples["English prose"]',
        "before = dict(widget.last)",
    ],
    # The β explorer reads P(stop) on the held-out questions before and after the DPO run.
    "11_prompting_alignment.ipynb": [
        "BETA = 0.1",
        'questions = [p["prompt"] for p in pref_heldout[:CFG["n_answers"]]]',
        "from llmlab.widgets import dpo_beta_explorer",
        "at_train = explorer.last",
    ],
    "12_data_parallel.ipynb": [
        "explorer = data_parallel_widget(ranks=8, params_b=7.0)",
        "# Drive it from code, as a person would: 64 ranks, then a 70B model",
    ],
    "14_attention_kernels.ipynb": [
        "explorer = attention_block_widget(n=4096, d=64, block_size=64)",
        "# Drive it from code, as a person would: blocks of 128, then 256",
    ],
    "16_model_parallel.ipynb": [
        'timeline = pipeline_timeline_widget(stages=STAGES, micro_batches=MICRO_BATCHES, kind="1f1b")',
        "# Drive them from code, as a person would: more micro-batches, then 4,096 GPUs",
    ],
}


def source(cell: dict) -> str:
    return "".join(cell["source"])


def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def is_tagged(cell: dict) -> bool:
    return TAG in cell.get("metadata", {}).get("tags", [])


def subset_cells(nb: dict) -> list[dict]:
    """The setup cells and the ``browser``-tagged cells of ``nb`` (a notebook's JSON), in notebook order."""
    setup = code_cells(nb)[:SETUP_CELLS]
    return [c for c in nb["cells"] if c["cell_type"] == "code" and (any(c is s for s in setup) or is_tagged(c))]


def subset_notebook(nb: dict) -> dict:
    """A copy of ``nb`` holding only its title cell and :func:`subset_cells` (what the browser test opens)."""
    out = copy.deepcopy(nb)
    title = next((c for c in nb["cells"] if c["cell_type"] == "markdown"), None)
    out["cells"] = copy.deepcopy(([title] if title else []) + subset_cells(nb))
    return out


def _first_line(cell: dict) -> str:
    return source(cell).lstrip().split("\n", 1)[0]


def apply_tags(path: Path, prefixes: list[str], *, write: bool) -> list[str]:
    """Tag the cells of ``path`` whose first line starts with one of ``prefixes`` (each must match exactly
    one cell) and untag the others; returns what changed (or would change). Only cell metadata is touched."""
    nb = json.loads(path.read_text())
    problems, changes = [], []
    wanted = set()
    for prefix in prefixes:
        matches = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and _first_line(c).startswith(prefix)]
        if len(matches) != 1:
            problems.append(f"{path.name}: {len(matches)} cells start with {prefix!r}")
        wanted.update(matches)
    if problems:
        raise SystemExit("\n".join(problems))
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code" or (i in wanted) == is_tagged(cell):
            continue
        tags = [t for t in cell.get("metadata", {}).get("tags", []) if t != TAG]
        if i in wanted:
            tags.append(TAG)
        changes.append(f"{path.name} cell {i}: {'tag' if i in wanted else 'untag'} {_first_line(cell)[:70]!r}")
        if tags:
            cell.setdefault("metadata", {})["tags"] = tags
        else:
            cell["metadata"].pop("tags", None)
    if write and changes:
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return changes


def main(argv: list[str]) -> int:
    check = "--check" in argv
    changes = []
    for name, prefixes in TAGGED.items():
        path = ROOT / "notebooks" / name
        if path.exists():
            changes += apply_tags(path, prefixes, write=not check)
    print("\n".join(changes) or "tags as recorded")
    return 1 if check and changes else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
