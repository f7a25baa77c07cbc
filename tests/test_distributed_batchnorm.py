"""llmlab.distributed.batchnorm (``sync_batch_norm``, ``SyncBatchNorm``) and ``batchnorm_under_ddp``.

Cases ported from PyTorch's own tests (re-derived, not copied), pytorch/pytorch
torch/testing/_internal/distributed/distributed_test.py: ``test_DistributedDataParallel_SyncBatchNorm``
(+ ``_No_Affine``, ``_2D_Input``, ``_Single_Input_Per_Process``, ``_Diff_Input_Sizes_gradient``,
``_Diff_Input_Sizes_Running_Value``). They run on the shared process group of ``conftest.shared_group``.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from conftest import model_step_with_zero_grad, requires_cuda
from llmlab.accumulation import (accumulated_grads, accumulation_pass, loss_fn_for, make_batch, make_model,
                                 relative_difference)
from llmlab.distributed import SyncBatchNorm, batchnorm_under_ddp, convert_sync_batchnorm, run, sync_batch_norm

# ---- Workers (run in spawned processes) -----------------------------------------------------------


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
        model_step_with_zero_grad(model)
        model_step_with_zero_grad(ddp)
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


def test_sync_batch_norm_over_ranks_equals_batch_norm_over_the_global_batch(shared_group):
    out = shared_group("syncbn")
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
    model_fn = functools.partial(make_model, "cnn_bn", seed=0)
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
