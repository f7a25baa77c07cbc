"""llmlab.distributed.model_parallel_demo: the script version of notebook 16 under torchrun and under run."""

from __future__ import annotations

import pytest

from llmlab.distributed import model_parallel_demo
from torchrun_helpers import run_under_torchrun


def test_model_parallel_demo_runs_under_torchrun_on_the_cpu():
    proc = run_under_torchrun(["llmlab.distributed.model_parallel_demo"])
    assert "tensor-parallel attention on 2 ranks" in proc.stdout and "on 2 ranks: match" in proc.stdout


def test_model_parallel_demo_without_torchrun_uses_run(capsys):
    assert model_parallel_demo.main(["--nproc", "1"]) == 0
    assert "on 1 ranks: match" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        model_parallel_demo.main(["--nproc", "0"])
    with pytest.raises(TypeError, match="argv"):
        model_parallel_demo.main("--nproc 2")
