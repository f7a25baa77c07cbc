"""llmlab.distributed.model_parallel_demo: the script version of notebook 16 under torchrun and under run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmlab.distributed import model_parallel_demo

ROOT = Path(__file__).resolve().parents[1]


def test_model_parallel_demo_runs_under_torchrun_on_the_cpu():
    torchrun = Path(sys.executable).with_name("torchrun")
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "lib"), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    command = [*launcher, "--standalone", "--nproc-per-node", "2", "-m", "llmlab.distributed.model_parallel_demo"]
    outputs = []
    for _ in range(2):  # torchrun's free-port pick can race on a busy machine (see test_distributed's demo test)
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        outputs.append(proc.stdout + proc.stderr)
        if proc.returncode == 0:
            break
    assert proc.returncode == 0, "\n---- next attempt ----\n".join(outputs)
    assert "tensor-parallel attention on 2 ranks" in proc.stdout and "on 2 ranks: match" in proc.stdout


def test_model_parallel_demo_without_torchrun_uses_run(capsys):
    assert model_parallel_demo.main(["--nproc", "1"]) == 0
    assert "on 1 ranks: match" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        model_parallel_demo.main(["--nproc", "0"])
    with pytest.raises(TypeError, match="argv"):
        model_parallel_demo.main("--nproc 2")
