"""Regenerate lib/llmlab/datafiles/instructions/{train,heldout}.jsonl, the instruction set of notebook 07.

    python data/make_instructions.py          # 512 train + 64 held-out examples, seed 0

The examples come from llmlab.data.make_date_instructions (deterministic for a given seed), so
running this again rewrites byte-identical files; tests/test_lora.py checks that it does.
"""

import argparse
from pathlib import Path

from llmlab.data import write_instructions

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=512)
    parser.add_argument("--n-heldout", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "lib" / "llmlab" / "datafiles" / "instructions"))
    args = parser.parse_args()
    for path in write_instructions(args.out, args.n_train, args.n_heldout, seed=args.seed):
        print("wrote", path)
