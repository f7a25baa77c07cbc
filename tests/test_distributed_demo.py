"""llmlab.distributed.demo: the script version, under torchrun and under llmlab's own ``run``."""

from __future__ import annotations

import pytest

from llmlab.distributed import demo
from torchrun_helpers import run_under_torchrun


def test_demo_runs_under_torchrun_on_the_cpu():
    proc = run_under_torchrun(["llmlab.distributed.demo", "--steps", "2"])
    assert "rank 1/2" in proc.stdout and "on 2 ranks: match" in proc.stdout


def test_demo_main_without_torchrun_uses_run(capsys):
    assert demo.main(["--nproc", "1", "--steps", "1"]) == 0
    assert "on 1 ranks: match" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        demo.main(["--nproc", "0"])
