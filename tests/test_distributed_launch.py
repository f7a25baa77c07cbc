"""llmlab.distributed.launch.run against real processes: results in rank order, a failing, hanging
or silently dying rank reported and every process cleaned up, bad arguments refused before anything starts.

Worker functions live at the top of this module: a spawned process imports them by name (the test
folder is on ``sys.path``, which spawned children inherit).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from llmlab.distributed import MAX_WORLD_SIZE, WorkerError, run, simulate_ring_all_reduce

# ---- Workers (run in spawned processes) -----------------------------------------------------------


def hello(rank, world_size, tag):
    """Rank, environment, pid, and an all_reduce of a per-rank random vector (compared with the ring by hand)."""
    x = torch.randn(10, generator=torch.Generator().manual_seed(rank))
    dist.all_reduce(x)
    return {"rank": rank, "world_size": world_size, "tag": tag, "pid": os.getpid(), "sum": x,
            "env": (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["MASTER_ADDR"]),
            "backend": dist.get_backend(), "threads": torch.get_num_threads()}


def fail_on_rank_1(rank, world_size, pid_dir):
    Path(pid_dir, str(rank)).write_text(str(os.getpid()))
    if rank == 1:
        raise ValueError("boom from rank 1")
    dist.barrier()  # the others wait for rank 1, which never comes


def hang_on_rank_1(rank, world_size, pid_dir):
    Path(pid_dir, str(rank)).write_text(str(os.getpid()))
    if rank == 1:
        time.sleep(3600)
    return rank


def die_silently_on_rank_0(rank, world_size):
    if rank == 0:
        os._exit(3)
    dist.barrier()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def test_run_returns_per_rank_results_in_rank_order_and_leaves_no_process():
    results = run(hello, 3, "tag")
    assert [r["rank"] for r in results] == [0, 1, 2]
    assert all(r["world_size"] == 3 and r["tag"] == "tag" and r["backend"] == "gloo" for r in results)
    assert [r["env"] for r in results] == [(str(k), "3", "127.0.0.1") for k in range(3)]
    assert len({r["pid"] for r in results}) == 3 and os.getpid() not in {r["pid"] for r in results}
    assert all(r["threads"] == max(1, (os.cpu_count() or 1) // 3) for r in results)
    # gloo's all_reduce = the ring by hand = the plain sum, on every rank
    vectors = [torch.randn(10, generator=torch.Generator().manual_seed(r)) for r in range(3)]
    ring = simulate_ring_all_reduce(vectors)
    for r in results:
        torch.testing.assert_close(r["sum"], sum(vectors), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(ring.results[r["rank"]], r["sum"], rtol=1e-6, atol=1e-6)
    assert not multiprocessing.active_children()
    assert not any(_alive(r["pid"]) for r in results)


def test_run_raises_with_the_failing_workers_traceback_and_kills_the_others(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(WorkerError) as info:
        run(fail_on_rank_1, 3, str(tmp_path), timeout=60)
    assert info.value.rank == 1 and 1 in info.value.failed_ranks
    assert "ValueError: boom from rank 1" in str(info.value) and "fail_on_rank_1" in info.value.worker_traceback
    assert time.monotonic() - t0 < 55  # raised on the error, not on the timeout
    pids = [int(p.read_text()) for p in tmp_path.iterdir()]
    assert len(pids) == 3 and not any(_alive(pid) for pid in pids)
    assert not multiprocessing.active_children()


def test_run_kills_a_worker_that_hangs_past_the_timeout(tmp_path):
    """A few seconds of timeout; doubled only when the hanging rank had not even started by then (a
    loaded machine: start-up counts against the timeout), so the test kills a worker that runs."""
    for timeout in (4, 8, 16, 32, 64):
        for stale in tmp_path.iterdir():
            stale.unlink()
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match=rf"ranks \[(0, )?1\] still running after timeout={timeout} s") as info:
            run(hang_on_rank_1, 2, str(tmp_path), timeout=timeout)
        elapsed = time.monotonic() - t0
        if (tmp_path / "1").exists() and "ranks [1] " in str(info.value):  # rank 1 started and hung; rank 0 returned
            break
    else:
        pytest.fail("rank 1 did not start within 64 s: is the machine that loaded?")
    assert timeout <= elapsed < timeout + 15  # raised at the timeout (plus the kill), not at the end of a sleep
    pid = int((tmp_path / "1").read_text())
    assert not _alive(pid) and not multiprocessing.active_children()


def test_run_reports_a_worker_that_dies_without_a_word():
    with pytest.raises(WorkerError, match="exited with code 3") as info:
        run(die_silently_on_rank_0, 2, timeout=60)
    assert info.value.rank == 0
    assert not multiprocessing.active_children()


def _local_function(rank, world_size):
    return rank


def test_run_rejects_bad_arguments_before_starting_anything(monkeypatch):
    for bad in (0, -1, MAX_WORLD_SIZE + 1):
        with pytest.raises(ValueError, match="world_size"):
            run(hello, bad, "x")
    for bad in (2.0, "2", True):
        with pytest.raises(TypeError, match="world_size"):
            run(hello, bad, "x")
    with pytest.raises(ValueError, match="backend"):
        run(hello, 2, "x", backend="mpi")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="nccl"):
            run(hello, 2, "x", backend="nccl")
    with pytest.raises(ValueError, match="timeout"):
        run(hello, 2, "x", timeout=0)
    with pytest.raises(TypeError, match="fn must be a function"):
        run("hello", 2)
    with pytest.raises(ValueError, match="lambda"):
        run(lambda rank, ws: rank, 2)

    def inner(rank, world_size):
        return rank

    with pytest.raises(ValueError, match="define it in a .py module"):
        run(inner, 2)
    with pytest.raises(TypeError, match="picklable"):
        run(hello, 2, threading.Lock())
    # A function defined in a notebook cell: __main__ without a file.
    monkeypatch.setattr(_local_function, "__module__", "__main__")
    monkeypatch.delattr(sys.modules["__main__"], "__file__", raising=False)
    with pytest.raises(ValueError, match="notebook cell"):
        run(_local_function, 2)
    assert not multiprocessing.active_children()
