"""llmlab.distributed.tensor_parallel: a Megatron-style MLP and attention block on gloo ranks, against the same
block on one process and against PyTorch's own ``torch.distributed.tensor.parallel``.

Cases ported from pytorch/pytorch test/distributed/tensor/parallel/test_tp_examples.py (re-derived, not copied):
``_test_mlp_training_e2e`` / ``test_mlp_training`` (ColwiseParallel net1 + RowwiseParallel net2: outputs and
gradients equal to the unsplit module, one all-reduce in forward; after an SGD step with lr 0.25 the weights
are still equal and a fresh input gives the same output) and ``_validate_fwd``/``_validate_bwd`` of
``test_transformer_training`` (collective counts per phase, float64). Each ``run`` starts processes
(seconds each on a laptop), so one worker checks several cases.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmlab.distributed import BLOCKS, TPSpec, ring_allreduce_bytes, run, tensor_parallel_step
from llmlab.distributed.tensor_parallel import CollectiveLog, make_block, shard_block
from llmlab.distributed.tensor_parallel import _assemble, _block_data, _dtensor_rank  # the pieces the workers reuse


def tp_cases(rank, world_size, spec, with_dtensor):
    """On each rank, for both blocks: forward/backward with the input requiring a gradient and without,
    then an SGD step (lr 0.25) and a second forward on a fresh input; the collectives counted per phase."""
    out = {}
    for block in BLOCKS:
        full = make_block(block, spec)
        x, r = _block_data(spec)
        log = CollectiveLog()
        tp = shard_block(full, rank, world_size, log=log)
        xg = x.clone().requires_grad_(True)
        y = tp(xg)
        (y * r).sum().backward()
        case = {"y": y.detach(), "x_grad": xg.grad, "grads": {n: p.grad.clone() for n, p in tp.named_parameters()},
                "log": list(log.records)}
        log.records.clear()
        tp.zero_grad()
        y2 = tp(x)                                  # the input needs no gradient: no all-reduce in backward
        y2.sum().backward()
        case["log_no_input_grad"] = list(log.records)
        torch.optim.SGD(tp.parameters(), lr=0.25).step()
        case["params_after_step"] = {n: p.detach().clone() for n, p in tp.named_parameters()}
        fresh = torch.randn(spec.batch, spec.seq, spec.hidden, generator=torch.Generator().manual_seed(7),
                            dtype=torch.float64)
        case["y_fresh"] = tp(fresh).detach()
        if with_dtensor:
            case.update(_dtensor_rank(world_size, block, spec))
        out[block] = case
    return out


def _reference(block, spec):
    full = make_block(block, spec)
    x, r = _block_data(spec)
    x.requires_grad_(True)
    y = full(x)
    (y * r).sum().backward()
    grads = {n: p.grad.clone() for n, p in full.named_parameters()}
    full.zero_grad()
    x2, _ = _block_data(spec)
    full(x2).sum().backward()
    torch.optim.SGD(full.parameters(), lr=0.25).step()
    fresh = torch.randn(spec.batch, spec.seq, spec.hidden, generator=torch.Generator().manual_seed(7),
                        dtype=torch.float64)
    return {"y": y.detach(), "x_grad": x.grad, "grads": grads, "params_after_step": dict(full.named_parameters()),
            "y_fresh": full(fresh).detach()}


@pytest.mark.parametrize("world_size", [2, 4])
def test_tensor_parallel_blocks_equal_one_process(world_size):
    spec = TPSpec(hidden=16, ffn=32, heads=4, batch=2, seq=5)
    ranks = run(tp_cases, world_size, spec, world_size == 2, timeout=180)   # PyTorch's TP on 2 ranks only
    activation_bytes = spec.batch * spec.seq * spec.hidden * 8
    for block in BLOCKS:
        ref = _reference(block, spec)
        for rank_out in ranks:          # every rank holds the full output and the full input gradient
            torch.testing.assert_close(rank_out[block]["y"], ref["y"], rtol=0, atol=1e-12)
            torch.testing.assert_close(rank_out[block]["x_grad"], ref["x_grad"], rtol=0, atol=1e-12)
            torch.testing.assert_close(rank_out[block]["y_fresh"], ref["y_fresh"], rtol=0, atol=1e-12)
        grads = _assemble(block, [rk[block]["grads"] for rk in ranks])
        assert grads.keys() == ref["grads"].keys()
        for name, g in ref["grads"].items():
            torch.testing.assert_close(grads[name], g, rtol=0, atol=1e-12)
            if world_size == 2:     # PyTorch's ColwiseParallel / RowwiseParallel on the same weights
                torch.testing.assert_close(ranks[0][block]["dtensor_grads"][name], g, rtol=0, atol=1e-12)
        if world_size == 2:
            torch.testing.assert_close(ranks[0][block]["dtensor_output"], ref["y"], rtol=0, atol=1e-12)
            torch.testing.assert_close(ranks[0][block]["dtensor_input_grad"], ref["x_grad"], rtol=0, atol=1e-12)
        after = _assemble(block, [rk[block]["params_after_step"] for rk in ranks])
        for name, p in ref["params_after_step"].items():
            torch.testing.assert_close(after[name], p.detach(), rtol=0, atol=1e-12)
        # One all-reduce of the activations in forward, one of the input gradient in backward (Megatron's g and f).
        assert ranks[0][block]["log"] == [("forward", "all_reduce", activation_bytes),
                                          ("backward", "all_reduce", activation_bytes)]
        assert ranks[0][block]["log_no_input_grad"] == [("forward", "all_reduce", activation_bytes)]
    # The ring sends 2 (N - 1)/N of each payload per rank.
    assert ring_allreduce_bytes(activation_bytes, world_size) == 2 * (world_size - 1) / world_size * activation_bytes


def test_tensor_parallel_step_equals_one_process_and_pytorch_tensor_parallel():
    block = "mlp"
    run_ = tensor_parallel_step(block, 2, TPSpec(), compare_dtensor=True, timeout=180)
    assert run_.max_error() < 1e-12
    assert run_.max_error(against="dtensor") < 1e-12
    assert run_.collectives == 2
    assert run_.forward_bytes == run_.backward_bytes == 2 * 6 * 16 * 8       # batch · seq · hidden · 8 bytes
    # A wrong split (the row-parallel bias added on every rank) would be off by (N - 1) · bias: far above 1e-12.
    assert run_.reference_grads["down.bias"].abs().max() > 1e-3


def test_row_parallel_bias_added_once():
    """On one rank the tensor-parallel block is the block itself (no communication needed)."""
    spec = TPSpec()
    for block in BLOCKS:
        full = make_block(block, spec)
        x, _ = _block_data(spec)
        torch.testing.assert_close(shard_block(full, 0, 1)(x), full(x), rtol=0, atol=1e-13)


def test_tensor_parallel_step_rejects_bad_arguments():
    with pytest.raises(ValueError, match="block"):
        tensor_parallel_step("conv", 2)
    with pytest.raises(ValueError, match="spec.ffn must be divisible by world_size"):
        tensor_parallel_step("mlp", 3, TPSpec(ffn=64))
    with pytest.raises(ValueError, match="spec.heads must be divisible by world_size"):
        tensor_parallel_step("attention", 3, TPSpec(heads=4))
    with pytest.raises(ValueError, match="spec.hidden must be divisible by spec.heads"):
        tensor_parallel_step("attention", 2, TPSpec(hidden=18, heads=4))
    with pytest.raises(TypeError, match="spec must be a TPSpec"):
        tensor_parallel_step("mlp", 2, {"hidden": 16})
    with pytest.raises(ValueError, match="world_size"):
        tensor_parallel_step("mlp", 0)


def test_attention_reads_its_heads_from_the_projection_width():
    """The reference attention runs on a slice of heads (what ColwiseParallel hands it): two halves of the heads
    concatenated equal the whole."""
    spec = TPSpec(hidden=16, heads=4)
    att = make_block("attention", spec)
    x, _ = _block_data(spec)
    b, s, _ = x.shape
    q, k, v = att.q(x), att.k(x), att.v(x)

    def heads(t, lo, hi):
        return t.view(b, s, -1, att.head_dim)[:, :, lo:hi].transpose(1, 2)

    halves = [F.scaled_dot_product_attention(heads(q, lo, lo + 2), heads(k, lo, lo + 2), heads(v, lo, lo + 2),
                                             is_causal=True) for lo in (0, 2)]
    whole = F.scaled_dot_product_attention(heads(q, 0, 4), heads(k, 0, 4), heads(v, 0, 4), is_causal=True)
    torch.testing.assert_close(torch.cat(halves, dim=1), whole, rtol=0, atol=1e-13)
