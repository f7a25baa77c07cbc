"""llmlab.distributed against PyTorch's own distributed engine (gloo on the CPU, 127.0.0.1).

Worker functions live at the top of this module: a spawned process imports them by name (the test
folder is on ``sys.path``, which spawned children inherit). Several checks share one ``run`` where
they can: each process costs seconds of start-up on a laptop.

Cases ported from PyTorch's own tests (re-derived, not copied):
- pytorch/pytorch torch/testing/_internal/distributed/distributed_test.py:
  ``test_DistributedDataParallelCPU`` (+ ``_grad_is_view``, via ``_test_DDP_niter``: 5 iterations, the
  ``Net`` with a frozen bias and a non-float parameter), ``test_accumulate_gradients_no_sync``,
  ``test_DistributedDataParallel_SyncBatchNorm`` (+ ``_No_Affine``, ``_2D_Input``,
  ``_Single_Input_Per_Process``, ``_Diff_Input_Sizes_gradient``, ``_Diff_Input_Sizes_Running_Value``);
- pytorch/pytorch test/distributed/optim/test_zero_redundancy_optimizer.py: ``test_sharding``,
  ``test_local_optimizer_parity``;
- pytorch/pytorch test/distributed/_composable/fsdp/test_fully_shard_init.py:
  ``test_shard_tensor_parameters`` (odd sizes, uneven shards = ``torch.chunk`` pieces).
"""

from __future__ import annotations

import copy
import functools
import math
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel as DDP

from conftest import requires_cuda
from llmlab.accumulation import (accumulated_grads, accumulation_pass, full_batch_grads, loss_fn_for, make_batch,
                                 make_model, relative_difference)
from llmlab.distributed import (MAX_WORLD_SIZE, SyncBatchNorm, WorkerError, batchnorm_under_ddp, check_importable,
                                convert_sync_batchnorm, crossover_tokens, ddp_gradients, measure_all_reduce,
                                ring_allreduce_bytes, run, sharded_ledger, simulate_ring_all_reduce, step_estimate,
                                sync_batch_norm)
from llmlab.distributed import demo
from llmlab.distributed.sharding import MEASURED_STAGES, make_transformer, sharding_table, storage_bytes
from llmlab.fitting import fit_scaling
from llmlab.memory import count_parameters, memory_ledger

ROOT = Path(__file__).resolve().parents[1]


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


class Net(nn.Module):
    """PyTorch's DDP test model: a frozen bias and a non-float parameter that takes no gradient."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(2, 10, bias=False)
        self.fc2 = nn.Linear(10, 50, bias=True)
        self.fc2.bias.requires_grad = False
        self.fc3 = nn.Linear(50, 4, bias=False)
        self.no_grad_param = nn.Parameter(torch.tensor([2, 2]).long(), requires_grad=False)

    def forward(self, x):
        x = F.relu(self.fc2(F.relu(self.fc1(x))))
        return F.softmax(self.fc3(x), dim=1)


def _step(model):
    """PyTorch's ``_model_step_with_zero_grad``: param += grad, then zero the gradient."""
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p += p.grad
                p.grad.zero_()


def pytorch_ddp_cases(rank, world_size):
    """``_test_DDP_niter`` (bucket views off and on) and ``test_accumulate_gradients_no_sync``."""
    out = {}
    for view in (False, True):
        torch.manual_seed(0)
        base = Net()
        ddp = DDP(copy.deepcopy(base), gradient_as_bucket_view=view)
        local_bs = 2
        g = torch.Generator().manual_seed(1)
        inp, target = torch.randn(world_size * local_bs, 2, generator=g), torch.randn(world_size * local_bs, 4, generator=g)
        worst = 0.0
        for it in range(5):
            F.mse_loss(base(inp), target).backward()
            sl = slice(rank * local_bs, (rank + 1) * local_bs)
            F.mse_loss(ddp(inp[sl]), target[sl]).backward()
            _step(base)
            _step(ddp)
            worst = max(worst, max((a - b).abs().max().item() for a, b in zip(base.parameters(), ddp.module.parameters())
                                   if a.is_floating_point()))
            inp = inp[torch.randperm(len(inp), generator=torch.Generator().manual_seed(100 + it))]
        out[f"niter_view_{view}"] = worst
    # no_sync: on even iterations gradients stay local (differ from the big batch), odd ones sync (equal).
    torch.manual_seed(0)
    model = nn.Linear(2, 4)
    ddp = DDP(copy.deepcopy(model))
    inp, target = torch.randn(world_size, 2), torch.randn(world_size, 4)
    with torch.no_grad(), ddp.no_sync():
        ddp(inp)  # a forward under no_grad + no_sync accumulates nothing
    checks = []
    for it in range(4):
        F.mse_loss(model(inp), target).backward()
        x_r, y_r = inp[rank:rank + 1], target[rank:rank + 1]
        if it % 2 == 0:
            with ddp.no_sync():
                F.mse_loss(ddp(x_r), y_r).backward()
        else:
            F.mse_loss(ddp(x_r), y_r).backward()
        same = all(torch.allclose(a.grad, b.grad, atol=1e-6) for a, b in zip(model.parameters(), ddp.module.parameters()))
        checks.append(same)
        perm = torch.randperm(world_size, generator=torch.Generator().manual_seed(1337 + it))
        inp, target = inp[perm], target[perm]
    out["no_sync_equal_per_iteration"] = checks
    return out


class BatchNormNet(nn.Module):
    """PyTorch's SyncBatchNorm test model: BatchNorm1d over (N, 4, 10)."""

    def __init__(self, affine=True):
        super().__init__()
        self.fc1 = nn.Linear(2, 40, bias=False)
        self.bn = nn.BatchNorm1d(4, affine=affine)
        self.fc2 = nn.Linear(40, 4, bias=False)

    def forward(self, x):
        x = self.bn(self.fc1(x).reshape(-1, 4, 10)).reshape(-1, 40)
        return F.softmax(self.fc2(x), dim=1)


def _syncbn_niter(rank, world_size, model, local_sizes, dims, n_iter=5):
    """``_test_DistributedDataParallel_SyncBatchNorm``: DDP + SyncBatchNorm vs one process on the global batch.

    Rank r holds ``local_sizes[r]`` rows of (in, out) = ``dims`` features; its loss is scaled by
    R · b_r / B so DDP's average is the global mean loss. Returns the worst parameter and buffer
    difference over ``n_iter`` steps of param += grad.
    """
    offsets = [sum(local_sizes[:r]) for r in range(world_size)]
    global_bs = sum(local_sizes)
    ddp = DDP(convert_sync_batchnorm(copy.deepcopy(model)))
    g = torch.Generator().manual_seed(7)
    inp, target = torch.randn(global_bs, dims[0], generator=g), torch.randn(global_bs, dims[1], generator=g)
    worst = 0.0
    for it in range(n_iter):
        F.mse_loss(model(inp), target).backward()
        sl = slice(offsets[rank], offsets[rank] + local_sizes[rank])
        scale = world_size * local_sizes[rank] / global_bs
        (F.mse_loss(ddp(inp[sl]), target[sl]) * scale).backward()
        _step(model)
        _step(ddp)
        pairs = list(zip(model.parameters(), ddp.module.parameters())) + list(zip(model.buffers(), ddp.module.buffers()))
        worst = max(worst, max((a.float() - b.float()).abs().max().item() for a, b in pairs))
        inp = inp[torch.randperm(global_bs, generator=torch.Generator().manual_seed(200 + it))]
    return worst


def syncbn_cases(rank, world_size):
    """The SyncBatchNorm cases of PyTorch's DDP tests, our function against BatchNorm on the global batch,
    plain BatchNorm as the control, and torch's own SyncBatchNorm on CPU tensors."""
    out = {}
    torch.manual_seed(0)
    for affine in (True, False):
        out[f"net_affine_{affine}"] = _syncbn_niter(rank, world_size, BatchNormNet(affine), [2] * world_size, (2, 4))
    out["diff_input_sizes"] = _syncbn_niter(rank, world_size, BatchNormNet(), [r + 2 for r in range(world_size)], (2, 4))
    out["input_2d"] = _syncbn_niter(rank, world_size, nn.BatchNorm1d(2), [4] * world_size, (2, 2))
    out["single_input_per_process"] = _syncbn_niter(rank, world_size, nn.BatchNorm1d(2), [1] * world_size, (2, 2))
    # Diff_Input_Sizes_Running_Value: momentum 0.99, 100 steps; the running stats = global mean / unbiased var.
    layer = DDP(SyncBatchNorm(2, momentum=0.99))
    inputs = [torch.cat([torch.ones(2, 1, 10 ** (i + 1)) * 0.1 ** (i - 1), torch.ones(2, 1, 10 ** (i + 1)) * 0.3 ** (i - 1)],
                        dim=1) for i in range(world_size)]
    everything = torch.cat([x.permute(1, 0, 2).reshape(2, -1) for x in inputs], dim=1)
    for _ in range(100):
        layer(inputs[rank]).mean().backward()
    out["running_value"] = max((layer.module.running_mean - everything.mean(1)).abs().max().item(),
                               ((layer.module.running_var - everything.var(1)) / everything.var(1)).abs().max().item())
    # Forward and input gradient against BatchNorm over the global batch, uneven shards, one of them empty.
    g = torch.Generator().manual_seed(3)
    sizes = [5, 0, 3, 4][:world_size] if world_size > 1 else [5]
    x_all = torch.randn(sum(sizes), 3, 6, 6, generator=g) * 2 + 4
    w_all = torch.randn_like(x_all)  # G = Σ_r sum(y_r · w_r): its gradient is well defined per rank
    weight, bias = torch.randn(3, generator=g), torch.randn(3, generator=g)
    ref_x = x_all.clone().requires_grad_()
    ref_w, ref_b = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    ref_rm, ref_rv = torch.zeros(3), torch.ones(3)
    ref_y = F.batch_norm(ref_x, ref_rm, ref_rv, ref_w, ref_b, True, 0.1, 1e-5)
    (ref_y * w_all).sum().backward()
    sl = slice(sum(sizes[:rank]), sum(sizes[:rank + 1]))
    x = x_all[sl].clone().requires_grad_()
    w, b = weight.clone().requires_grad_(), bias.clone().requires_grad_()
    rm, rv = torch.zeros(3), torch.ones(3)
    y = sync_batch_norm(x, rm, rv, w, b)
    (y * w_all[sl]).sum().backward()
    grads = torch.cat([w.grad, b.grad])
    dist.all_reduce(grads)  # ∂G/∂γ, ∂G/∂β: the per-rank sums add up (DDP does this for parameters)
    out["forward"] = (y - ref_y[sl]).abs().max().item() if y.numel() else 0.0
    out["grad_x"] = (x.grad - ref_x.grad[sl]).abs().max().item() if x.numel() else 0.0
    out["grad_params"] = (grads - torch.cat([ref_w.grad, ref_b.grad])).abs().max().item()
    out["running"] = max((rm - ref_rm).abs().max().item(), (rv - ref_rv).abs().max().item())
    # Control: plain BatchNorm on the shard normalises with the shard's statistics.
    plain = F.batch_norm(x_all[sl], None, None, weight, bias, True, 0.1, 1e-5) if sizes[rank] > 1 else None
    out["plain_forward"] = (plain - ref_y[sl].detach()).abs().max().item() if plain is not None else None
    # torch's SyncBatchNorm refuses CPU tensors: the reason llmlab builds its own.
    try:
        nn.SyncBatchNorm(3)(x_all[:4])
        out["torch_cpu_error"] = None
    except ValueError as e:
        out["torch_cpu_error"] = str(e)
    return out


def syncbn_vs_torch(rank, world_size):
    """On CUDA: llmlab's SyncBatchNorm against torch.nn.SyncBatchNorm, output and gradients."""
    device = torch.device("cuda", rank % torch.cuda.device_count())
    torch.cuda.set_device(device)
    g = torch.Generator().manual_seed(11)
    x_all = (torch.randn(4 * world_size, 3, 5, 5, generator=g) * 3 + 1).to(device)
    x = x_all.chunk(world_size)[rank]
    results = []
    for layer in (nn.SyncBatchNorm(3), convert_sync_batchnorm(nn.BatchNorm2d(3))):
        layer = layer.to(device)
        xi = x.clone().requires_grad_()
        y = layer(xi)
        (y * torch.arange(y.numel(), device=device).reshape(y.shape).sin()).sum().backward()
        results.append((y.detach().cpu(), xi.grad.cpu(), layer.weight.grad.cpu(), layer.running_var.cpu()))
    return [max((a - b).abs().max().item() for a, b in zip(*results))]


def sharding_ports(rank, world_size):
    """ZeRO ``test_sharding`` and FSDP2 ``test_shard_tensor_parameters`` (odd sizes)."""
    sizes = [9, 7, 5, 3]
    params = [torch.rand(s, 1) for s in sizes * world_size]
    zero = ZeroRedundancyOptimizer(params, optimizer_class=torch.optim.SGD, lr=0.01)
    zero_numel = sum(p.numel() for p in zero.optim.param_groups[0]["params"])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 9), nn.ReLU(), nn.Linear(9, 3))
    originals = [p.detach().clone() for p in model.parameters()]
    fully_shard(model)
    chunks_equal = all(torch.equal(p.to_local(), torch.chunk(o, world_size, dim=0)[rank])
                       for p, o in zip(model.parameters(), originals))
    return {"zero_numel": zero_numel, "fsdp_chunks_equal": chunks_equal}


# ---- run() -----------------------------------------------------------------------------------------


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
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"ranks \[1\] still running after timeout=30 s"):
        run(hang_on_rank_1, 2, str(tmp_path), timeout=30)
    assert time.monotonic() - t0 < 45
    pid = int((tmp_path / "1").read_text())  # it did start
    assert not _alive(pid) and not multiprocessing.active_children()


def test_run_reports_a_worker_that_dies_without_a_word():
    with pytest.raises(WorkerError, match="exited with code 3") as info:
        run(die_silently_on_rank_0, 2, timeout=60)
    assert info.value.rank == 0
    assert not multiprocessing.active_children()


def _local_function(rank, world_size):
    return rank


def _make_local_loss():
    class Local(nn.Module):
        def forward(self, a, b):
            return F.mse_loss(a, b)

    return Local


_LocalLoss = _make_local_loss()  # a callable object whose class lives inside a function


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

    with pytest.raises(ValueError, match="define it at the top level"):
        run(inner, 2)
    with pytest.raises(TypeError, match="picklable"):
        run(hello, 2, threading.Lock())
    # A function defined in a notebook cell: __main__ without a file.
    monkeypatch.setattr(_local_function, "__module__", "__main__")
    monkeypatch.delattr(sys.modules["__main__"], "__file__", raising=False)
    with pytest.raises(ValueError, match="notebook cell"):
        run(_local_function, 2)
    assert not multiprocessing.active_children()


# ---- DDP -------------------------------------------------------------------------------------------


def test_pytorch_ddp_parity_cases():
    out = run(pytorch_ddp_cases, 2)
    for rank_out in out:
        assert rank_out["niter_view_False"] < 1e-6 and rank_out["niter_view_True"] < 1e-6
        assert rank_out["no_sync_equal_per_iteration"] == [False, True, False, True]


def test_ddp_gradients_equal_the_full_batch_gradient():
    loss_fn = loss_fn_for("cnn_gn")
    x, y = make_batch("cnn_gn", 32)
    model_fn = functools.partial(make_model, "cnn_gn", 0)
    g_big = full_batch_grads(model_fn(), loss_fn, x, y)
    g_ddp = ddp_gradients(model_fn, x, y, loss_fn, 4)
    assert set(g_ddp) == set(g_big)
    assert relative_difference(g_ddp, g_big) < 1e-6
    # The tolerance discriminates: one rank's shard alone gives a different gradient.
    assert relative_difference(full_batch_grads(model_fn(), loss_fn, x[:8], y[:8]), g_big) > 1e-2


def test_ddp_gradients_with_no_sync_accumulation():
    x, y = make_batch("linear", 24, dtype=torch.float64)
    model_fn = functools.partial(make_model, "linear", 0, dtype=torch.float64)
    g_big = full_batch_grads(model_fn(), F.mse_loss, x, y)
    g_ddp = ddp_gradients(model_fn, x, y, F.mse_loss, 3, accumulation_steps=4)
    assert relative_difference(g_ddp, g_big) < 1e-12  # float64: only the order of the sums differs


def test_ddp_gradients_rejects_bad_splits():
    x, y = make_batch("linear", 10)
    model_fn = functools.partial(make_model, "linear", 0)
    with pytest.raises(ValueError, match="world_size × accumulation_steps"):
        ddp_gradients(model_fn, x, y, F.mse_loss, 4)
    with pytest.raises(ValueError, match="world_size × accumulation_steps"):
        ddp_gradients(model_fn, x, y, F.mse_loss, 2, accumulation_steps=3)
    with pytest.raises(ValueError, match="same leading batch size"):
        ddp_gradients(model_fn, x, y[:5], F.mse_loss, 2)
    with pytest.raises(ValueError, match="world_size"):
        ddp_gradients(model_fn, x, y, F.mse_loss, 0)
    with pytest.raises(TypeError, match="sync_batchnorm"):
        ddp_gradients(model_fn, x, y, F.mse_loss, 2, sync_batchnorm=1)
    with pytest.raises(ValueError, match="model_fn=.*lambda"):
        ddp_gradients(lambda: make_model("linear", seed=0), x, y, F.mse_loss, 2)
    with pytest.raises(ValueError, match="loss_fn=.*cannot be imported"):
        ddp_gradients(model_fn, x, y, _LocalLoss(), 2)
    with pytest.raises(TypeError, match="model_fn must be callable"):
        batchnorm_under_ddp("model", x, y, F.mse_loss, 2)
    for importable in (functools.partial(make_model, "linear"), nn.MSELoss(), F.mse_loss, torch.add):
        check_importable("fn", importable)


# ---- Synchronised BatchNorm ------------------------------------------------------------------------


def test_sync_batch_norm_without_a_process_group_is_batch_norm():
    torch.manual_seed(0)
    x = torch.randn(6, 3, 4, dtype=torch.float64) * 3 + 5
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: sync_batch_norm(x, None, None, w, b),
                                    (x.clone().requires_grad_(), w, b))
    for shape in ((8, 3), (8, 3, 5), (4, 3, 5, 5), (2, 3, 2, 3, 4)):
        xs = torch.randn(*shape) * 2 + 10
        ref = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[len(shape)](3)
        ours = convert_sync_batchnorm(copy.deepcopy(ref))
        assert isinstance(ours, SyncBatchNorm)
        torch.testing.assert_close(ours(xs), ref(xs), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.running_var, ref.running_var)
        torch.testing.assert_close(ours.running_mean, ref.running_mean)
        ref.eval(), ours.eval()
        torch.testing.assert_close(ours(xs), ref(xs))
    cumulative, ours = nn.BatchNorm1d(3, momentum=None), SyncBatchNorm(3, momentum=None)
    for _ in range(3):
        xs = torch.randn(5, 3)
        cumulative(xs), ours(xs)
    torch.testing.assert_close(ours.running_mean, cumulative.running_mean)
    assert int(ours.num_batches_tracked) == 3


def test_convert_sync_batchnorm_keeps_parameters_and_mode():
    model = make_model("cnn_bn", seed=0)
    weight = model[1].weight
    converted = convert_sync_batchnorm(model)
    assert converted is model and isinstance(model[1], SyncBatchNorm) and isinstance(model[4], SyncBatchNorm)
    assert model[1].weight is weight and model[1].training
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 0


def test_sync_batch_norm_rejects_bad_input():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        sync_batch_norm(torch.randn(1, 3), None, None)
    with pytest.raises(ValueError, match="2-D"):
        sync_batch_norm(torch.randn(3), None, None)
    with pytest.raises(ValueError, match="eps"):
        sync_batch_norm(torch.randn(4, 3), None, None, eps=0)
    with pytest.raises(ValueError, match="at least 2D"):
        SyncBatchNorm(3)(torch.randn(3))


def test_sync_batch_norm_over_ranks_equals_batch_norm_over_the_global_batch():
    out = run(syncbn_cases, 3)
    for r, o in enumerate(out):
        for case in ("net_affine_True", "net_affine_False", "diff_input_sizes", "input_2d", "single_input_per_process"):
            assert o[case] < 1e-5, (r, case, o[case])
        assert o["running_value"] < 1e-5
        assert o["forward"] < 1e-5 and o["grad_x"] < 1e-5 and o["grad_params"] < 1e-4 and o["running"] < 1e-5
        assert o["torch_cpu_error"] is not None and "GPU" in o["torch_cpu_error"]
    assert out[0]["plain_forward"] > 1e-2 and out[2]["plain_forward"] > 1e-2  # plain BatchNorm differs


def test_batchnorm_under_ddp_plain_is_accumulation_synchronised_is_the_big_batch():
    loss_fn = loss_fn_for("cnn_bn")
    x, y = make_batch("cnn_bn", 32)
    model_fn = functools.partial(make_model, "cnn_bn", 0)
    big = accumulation_pass(model_fn(), loss_fn, x, y, 1)
    acc = accumulated_grads(model_fn(), loss_fn, x, y, 4)
    result = batchnorm_under_ddp(model_fn, x, y, loss_fn, 4)
    assert relative_difference(result.per_rank_grads, big.grads) > 1e-2
    assert relative_difference(result.per_rank_grads, acc) < 1e-6
    assert relative_difference(result.synchronised_grads, big.grads) < 1e-5
    assert relative_difference(result.synchronised_stats, big.running_stats) < 1e-5
    means = [k for k in big.running_stats if k.endswith("running_mean")]  # the variances sit near 0.9 either way
    assert relative_difference({k: result.per_rank_stats[k] for k in means}, {k: big.running_stats[k] for k in means}) > 1e-2


@requires_cuda
def test_sync_batch_norm_equals_torch_sync_batchnorm_on_gpu():
    backend = "nccl" if torch.cuda.device_count() >= 2 else "gloo"
    for worst in run(syncbn_vs_torch, 2, backend=backend):
        assert worst[0] < 1e-5


# ---- Sharding --------------------------------------------------------------------------------------


def test_sharded_ledger_formulas():
    P = 1000
    full = memory_ledger(P, precision="fp32")
    assert sharded_ledger(P, 4, "ddp") == full and full.total == 16 * P
    assert sharded_ledger(P, 4, "zero1").total == 8 * P + 8 * P // 4
    assert sharded_ledger(P, 4, "zero2").total == 4 * P + 12 * P // 4
    assert sharded_ledger(P, 4, "zero3").total == 16 * P // 4
    assert sharded_ledger(P, 3, "zero3").weights == math.ceil(4 * P / 3)
    mixed = sharded_ledger(P, 8, "zero1", precision="mixed")  # ZeRO's K = 12: fp32 master + m + v, sharded
    assert (mixed.weights, mixed.grads, mixed.master_weights + mixed.optimizer_states) == (2 * P, 2 * P, 12 * P // 8)
    assert all(sharded_ledger(P, 1, s) == full for s in ("ddp", "zero1", "zero2", "zero3"))
    with pytest.raises(ValueError, match="stage"):
        sharded_ledger(P, 2, "zero4")
    with pytest.raises(ValueError, match="world_size"):
        sharded_ledger(P, 0, "ddp")


def test_storage_bytes_counts_shared_storages_once():
    flat = torch.zeros(10)
    views = [flat[:4], flat[4:]]
    assert storage_bytes(views) == 40 and storage_bytes([torch.zeros(3), None, torch.zeros(2)]) == 20


def _greedy_partition(numels, world_size):
    """ZeroRedundancyOptimizer's documented rule: largest first, each to the least-loaded rank."""
    loads = [0] * world_size
    for n in sorted(numels, reverse=True):
        loads[loads.index(min(loads))] += n
    return loads


def test_zero_and_fsdp_shard_like_pytorch_says():
    for o in run(sharding_ports, 2):
        assert o["zero_numel"] == 9 + 7 + 5 + 3
        assert o["fsdp_chunks_equal"]


def test_sharding_table_measures_what_the_ledger_predicts():
    model = make_transformer()
    P = count_parameters(model).total
    numels = {n: p.numel() for n, p in model.named_parameters()}
    rows = {(r.stage, r.world_size): r for r in sharding_table((1, 3), steps=2)}  # 3 processes, groups of 1 and 3
    assert set(rows) == {(s, n) for s in MEASURED_STAGES for n in (1, 3)}
    full = memory_ledger(model, precision="fp32")
    for stage in MEASURED_STAGES:  # one rank holds everything, whatever the stage
        (alone,) = rows[stage, 1].per_rank
        assert (alone.weights, alone.grads, alone.optimizer_states) == (full.weights, full.grads, full.optimizer_states)
    for led in rows["ddp", 3].per_rank:
        assert (led.weights, led.grads, led.optimizer_states) == (full.weights, full.grads, full.optimizer_states)
        assert led.other == 4 * len(numels)  # AdamW's step counters
    zero = rows["zero1", 3]
    assert [led.optimizer_states for led in zero.per_rank] == [8 * n for n in _greedy_partition(numels.values(), 3)]
    assert sum(led.optimizer_states for led in zero.per_rank) == 8 * P
    assert all(led.weights == 4 * P and led.grads == 4 * P for led in zero.per_rank)
    assert zero.max_rank_bytes > zero.formula.total  # whole parameters do not split evenly
    fsdp = rows["zero3", 3]
    padded = sum(math.ceil(p.shape[0] / 3) * (p.numel() // p.shape[0]) for p in model.parameters())
    assert all(led.weights == 4 * padded for led in fsdp.per_rank)  # equal padded pieces
    shard_numel = [sum(torch.chunk(p.detach(), 3)[r].numel() if r < len(torch.chunk(p.detach(), 3)) else 0
                       for p in model.parameters()) for r in range(3)]
    assert [led.optimizer_states for led in fsdp.per_rank] == [8 * n for n in shard_numel]
    assert sum(shard_numel) == P and fsdp.formula.total <= fsdp.max_rank_bytes < 1.05 * fsdp.formula.total
    # Sharding changes where the bytes live, not the training: same losses, same weights.
    for stage in ("zero1", "zero3"):
        assert max(abs(a - b) / b for a, b in zip(rows[stage, 3].losses, rows["ddp", 3].losses)) < 1e-5
        for name, p in rows["ddp", 3].params.items():
            torch.testing.assert_close(rows[stage, 3].params[name], p, atol=1e-3, rtol=1e-5)  # PyTorch's ZeRO parity tolerance


def test_sharding_table_rejects_bad_arguments():
    with pytest.raises(ValueError, match="stages"):
        sharding_table((2,), ("zero2",))
    with pytest.raises(ValueError, match="world_sizes"):
        sharding_table((0,))
    with pytest.raises(ValueError, match="empty"):
        sharding_table(())
    with pytest.raises(ValueError, match="distinct"):
        sharding_table((2, 2))


# ---- Communication ---------------------------------------------------------------------------------


def test_ring_all_reduce_by_hand_sends_2_n_minus_1_over_n():
    for n in (1, 2, 3, 4, 8):
        buffers = [torch.randn(24, generator=torch.Generator().manual_seed(r), dtype=torch.float64) for r in range(n)]
        ring = simulate_ring_all_reduce(buffers)
        for result in ring.results:
            torch.testing.assert_close(result, sum(buffers))
        assert ring.bytes_sent == [ring_allreduce_bytes(24 * 8, n)] * n
    assert ring_allreduce_bytes(100, 1) == 0 and ring_allreduce_bytes(100, 2) == 100
    with pytest.raises(ValueError, match="same length"):
        simulate_ring_all_reduce([torch.zeros(3), torch.zeros(4)])
    with pytest.raises(TypeError):
        simulate_ring_all_reduce([])


def test_measure_all_reduce_on_gloo():
    timing = measure_all_reduce(2, (2**12, 2**16, 2**20), repeat=3)
    assert timing.nbytes == (2**12, 2**16, 2**20) and timing.bytes_sent == tuple(float(b) for b in timing.nbytes)
    # Structure only: which size takes longer is a timing, and timings belong to the benchmarks
    # (a 4 KiB and a 1 MiB all_reduce swap places on a loaded 2-core machine).
    assert len(timing.seconds) == 3 and all(s > 0 for s in timing.seconds)
    assert timing.fit == fit_scaling(timing.bytes_sent, timing.seconds, "n")  # the fit is of what was measured
    assert timing.bandwidth > 0
    with pytest.raises(ValueError, match="world_size"):
        measure_all_reduce(1)
    with pytest.raises(ValueError, match="distinct"):
        measure_all_reduce(2, (64, 64))


def test_step_estimate_for_a_7b_model_on_8_gpus():
    est = step_estimate(7e9, 8, link_gbit_s=400, flops_per_s=400e12, tokens_per_rank=32768)
    assert est.grad_bytes == 14e9 and est.bytes_sent == pytest.approx(24.5e9)
    assert est.comm_seconds == pytest.approx(24.5e9 / 50e9)
    assert est.compute_seconds == pytest.approx(6 * 7e9 * 32768 / 400e12)
    t_star = crossover_tokens(8, link_gbit_s=400, flops_per_s=400e12)
    assert t_star == pytest.approx(2 * 7 / 8 * 2 * 400e12 / (6 * 50e9))
    at = step_estimate(13e9, 8, tokens_per_rank=t_star)  # the crossover does not depend on the model size
    assert at.ratio == pytest.approx(1.0)
    with pytest.raises(ValueError, match="link_gbit_s"):
        step_estimate(7e9, 8, link_gbit_s=0)


# ---- The script version, under torchrun -------------------------------------------------------------


def test_demo_runs_under_torchrun_on_the_cpu():
    torchrun = Path(sys.executable).with_name("torchrun")
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "lib"), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    command = [*launcher, "--standalone", "--nproc-per-node", "2", "-m", "llmlab.distributed.demo", "--steps", "2"]
    # torchrun's rendezvous may hand its workers a port found by binding and releasing one
    # (torch.distributed.elastic.utils.distributed.get_free_port), which another process on a busy
    # shared machine can take first: one retry, and both outputs if both runs fail.
    outputs = []
    for _ in range(2):
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        outputs.append(proc.stdout + proc.stderr)
        if proc.returncode == 0:
            break
    assert proc.returncode == 0, "\n---- next attempt ----\n".join(outputs)
    assert "rank 1/2" in proc.stdout and "on 2 ranks: match" in proc.stdout


def test_demo_main_without_torchrun_uses_run(capsys):
    assert demo.main(["--nproc", "1", "--steps", "1"]) == 0
    assert "on 1 ranks: match" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        demo.main(["--nproc", "0"])
