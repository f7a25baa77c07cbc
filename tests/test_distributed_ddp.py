"""llmlab.distributed.ddp (``ddp_gradients``) and PyTorch's own DistributedDataParallel on gloo.

Cases ported from PyTorch's own tests (re-derived, not copied), pytorch/pytorch
torch/testing/_internal/distributed/distributed_test.py: ``test_DistributedDataParallelCPU``
(+ ``_grad_is_view``, via ``_test_DDP_niter``: 5 iterations, the ``Net`` with a frozen bias and a
non-float parameter) and ``test_accumulate_gradients_no_sync``. They run on the shared process
group of ``conftest.shared_group`` (one launch for the test-only cases of all distributed tests).
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from conftest import model_step_with_zero_grad
from llmlab.accumulation import full_batch_grads, loss_fn_for, make_batch, make_model, relative_difference
from llmlab.distributed import batchnorm_under_ddp, check_importable, ddp_gradients

# ---- Workers (run in spawned processes) -----------------------------------------------------------


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
            model_step_with_zero_grad(base)
            model_step_with_zero_grad(ddp)
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


def _make_local_loss():
    class Local(nn.Module):
        def forward(self, a, b):
            return F.mse_loss(a, b)

    return Local


_LocalLoss = _make_local_loss()  # a callable object whose class lives inside a function


def test_pytorch_ddp_parity_cases(shared_group):
    out = shared_group("ddp_parity")
    for rank_out in out:
        assert rank_out["niter_view_False"] < 1e-6 and rank_out["niter_view_True"] < 1e-6
        assert rank_out["no_sync_equal_per_iteration"] == [False, True, False, True]


def test_ddp_gradients_equal_the_full_batch_gradient():
    loss_fn = loss_fn_for("cnn_gn")
    x, y = make_batch("cnn_gn", 32)
    model_fn = functools.partial(make_model, "cnn_gn", seed=0)
    g_big = full_batch_grads(model_fn(), loss_fn, x, y)
    g_ddp = ddp_gradients(model_fn, x, y, loss_fn, 4)
    assert set(g_ddp) == set(g_big)
    assert relative_difference(g_ddp, g_big) < 1e-6
    # The tolerance discriminates: one rank's shard alone gives a different gradient.
    assert relative_difference(full_batch_grads(model_fn(), loss_fn, x[:8], y[:8]), g_big) > 1e-2


def test_ddp_gradients_with_no_sync_accumulation():
    x, y = make_batch("linear", 24, dtype=torch.float64)
    model_fn = functools.partial(make_model, "linear", seed=0, dtype=torch.float64)
    g_big = full_batch_grads(model_fn(), F.mse_loss, x, y)
    g_ddp = ddp_gradients(model_fn, x, y, F.mse_loss, 3, accumulation_steps=4)
    assert relative_difference(g_ddp, g_big) < 1e-12  # float64: only the order of the sums differs


def test_ddp_gradients_rejects_bad_splits():
    x, y = make_batch("linear", 10)
    model_fn = functools.partial(make_model, "linear", seed=0)
    with pytest.raises(ValueError, match="world_size × accumulation_steps"):
        ddp_gradients(model_fn, x, y, F.mse_loss, 4)
    with pytest.raises(ValueError, match="world_size × accumulation_steps"):
        ddp_gradients(model_fn, x, y, F.mse_loss, 2, accumulation_steps=3)
    with pytest.raises(ValueError, match="same leading batch size"):
        ddp_gradients(model_fn, x, y[:5], F.mse_loss, 2)
    with pytest.raises(ValueError, match="world_size"):
        ddp_gradients(model_fn, x, y, F.mse_loss, 0)
    with pytest.raises(ValueError, match="model_fn=.*lambda"):
        ddp_gradients(lambda: make_model("linear", seed=0), x, y, F.mse_loss, 2)
    with pytest.raises(ValueError, match="loss_fn=.*cannot be imported"):
        ddp_gradients(model_fn, x, y, _LocalLoss(), 2)
    with pytest.raises(TypeError, match="model_fn must be callable"):
        batchnorm_under_ddp("model", x, y, F.mse_loss, 2)
    for importable in (functools.partial(make_model, "linear"), nn.MSELoss(), F.mse_loss, torch.add):
        check_importable("fn", importable)
