"""Regenerate lib/llmlab/datafiles/prompting/, the in-context-learning tasks and the preference set of notebook 11.

    python data/make_prompt_data.py          # seed 0

The examples come from llmlab.prompt_data (deterministic for a given seed), so running this again
rewrites byte-identical files; tests/test_prompt_data.py checks that it does.
"""

import argparse
from pathlib import Path

from llmlab.prompt_data import write_prompt_data

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "lib" / "llmlab" / "datafiles" / "prompting"))
    args = parser.parse_args()
    for path in write_prompt_data(args.out, seed=args.seed):
        print("wrote", path)
