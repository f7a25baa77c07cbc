"""Regenerate lib/llmlab/datafiles/anatomy/animals.txt, the grammar corpus the tiny transformers of notebook 09 learn.

    python data/make_anatomy_corpus.py          # 4,000 sentences, seed 0

The sentences come from llmlab.anatomy.make_animal_corpus (deterministic for a given seed), so
running this again rewrites a byte-identical file; tests/test_anatomy_data.py checks that it does.
The other files in lib/llmlab/datafiles/anatomy/ (sentiment.jsonl, topic.jsonl, summaries.jsonl) are written by
hand, not generated.
"""

import argparse
from pathlib import Path

from llmlab.anatomy import write_corpus

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-sentences", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "lib" / "llmlab" / "datafiles" / "anatomy"))
    args = parser.parse_args()
    print("wrote", write_corpus(args.out, args.n_sentences, seed=args.seed))
