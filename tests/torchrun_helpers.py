"""Run a llmlab module under ``torchrun`` on 2 CPU processes, as a user would (shared by the demo tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_under_torchrun(module_args: list[str]) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node 2 -m <module_args>``; asserts it succeeded and returns it.

    torchrun's rendezvous may hand its workers a port found by binding and releasing one
    (torch.distributed.elastic.utils.distributed.get_free_port), which another process on a busy
    shared machine can take first: one retry, and both outputs if both runs fail."""
    torchrun = Path(sys.executable).with_name("torchrun")
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "lib"), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    command = [*launcher, "--standalone", "--nproc-per-node", "2", "-m", *module_args]
    outputs = []
    for _ in range(2):
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        outputs.append(proc.stdout + proc.stderr)
        if proc.returncode == 0:
            break
    assert proc.returncode == 0, "\n---- next attempt ----\n".join(outputs)
    return proc
