"""Model parallelism as a script: the same code under ``torchrun`` and under :func:`llmlab.distributed.run`.

::

    torchrun --standalone --nproc-per-node 2 -m llmlab.distributed.model_parallel_demo
    python -m llmlab.distributed.model_parallel_demo --nproc 2      # the same, started by llmlab.distributed.run

Every rank runs its shard of a tensor-parallel MLP and attention block (:func:`tp_rank_step`) and its stage
of a 1F1B pipeline over as many stages as there are ranks (:func:`pipeline_rank_steps`); rank 0 gathers the
results and checks them against the unsplit model on one process. Exit status 0 when all agree.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch.distributed as dist

from .launch import MAX_WORLD_SIZE, run
from .pipeline_run import PipelineSpec, assemble_pipeline_run, pipeline_rank_steps, single_process_step
from .tensor_parallel import BLOCKS, TPSpec, assemble_tp_run, tp_rank_step

__all__ = ["main"]

#: Largest absolute difference from one process that counts as equal (float64 throughout).
_TOLERANCE = 1e-10


def demo_rank(rank: int, world_size: int) -> dict:
    """What each rank runs: both tensor-parallel blocks, then one 1F1B pipeline step over ``world_size`` stages."""
    tp_spec = TPSpec(heads=2 * world_size, hidden=4 * world_size, ffn=8 * world_size)
    pp_spec = PipelineSpec(layers=2 * world_size, hidden=16, batch=8, micro_batches=4)
    return {"tp": {block: tp_rank_step(rank, world_size, block, tp_spec) for block in BLOCKS},
            "pp": pipeline_rank_steps(rank, world_size, ("1f1b",), pp_spec)[0],
            "tp_spec": tp_spec, "pp_spec": pp_spec}


def _report(results: list[dict]) -> int:
    world_size = len(results)
    ok = True
    for block in BLOCKS:
        tp = assemble_tp_run(block, results[0]["tp_spec"], [r["tp"][block] for r in results])
        err = tp.max_error()
        ok &= err <= _TOLERANCE
        print(f"tensor-parallel {block} on {world_size} ranks: {tp.collectives} all-reduces per step, "
              f"max |difference| from one process {err:.1e}")
    spec = results[0]["pp_spec"]
    pp = assemble_pipeline_run("1f1b", spec, [r["pp"] for r in results])
    loss, grads = single_process_step(spec)
    err = max(float((pp.grads[n] - g).abs().max()) for n, g in grads.items())
    ok &= err <= _TOLERANCE and abs(pp.loss - loss) <= _TOLERANCE
    print(f"1F1B pipeline on {world_size} stages, {spec.micro_batches} micro-batches: bubble {pp.bubble:.1%}, "
          f"loss {pp.loss:.6f} (one process {loss:.6f}), max |gradient difference| {err:.1e}")
    print(f"on {world_size} ranks: {'match' if ok else 'MISMATCH'} (tolerance {_TOLERANCE:g})")
    return 0 if ok else 1


def main(argv=None) -> int:
    if argv is not None and (isinstance(argv, (str, bytes)) or not isinstance(argv, (list, tuple))):
        raise TypeError(f"argv must be a list of command-line arguments (str) or None, got {type(argv).__name__}")
    parser = argparse.ArgumentParser(prog="python -m llmlab.distributed.model_parallel_demo",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--nproc", type=int, default=2, help="ranks to start when not under torchrun (default 2)")
    args = parser.parse_args(argv)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # started by torchrun: one rank per process
        dist.init_process_group("gloo")
        rank, world_size = dist.get_rank(), dist.get_world_size()
        try:
            result = demo_rank(rank, world_size)
            gathered = [None] * world_size
            dist.all_gather_object(gathered, result)
        finally:
            dist.destroy_process_group()
        return _report(gathered) if rank == 0 else 0
    if not 1 <= args.nproc <= MAX_WORLD_SIZE:
        parser.error(f"--nproc must be in [1, {MAX_WORLD_SIZE}]")
    return _report(run(demo_rank, args.nproc, timeout=180))


if __name__ == "__main__":
    sys.exit(main())
