"""Mixed-precision training made explicit: an fp32 master copy, dynamic loss scaling, Adam vs AdamW.

* :class:`MasterWeightsOptimizer` keeps fp32 master weights for a half-precision model and runs a
  torch optimizer on them, so small updates accumulate in fp32 instead of being rounded away;
  :func:`mixed_precision_setup` turns an fp32 model into that setup in place.
* :class:`DynamicLossScaler` is the rule of ``torch.amp.GradScaler`` written out: fp16 gradients
  below 2^-25 flush to zero unless the loss is multiplied by a scale ``S`` before backward.
* :func:`adam_vs_adamw_step`: where Adam + L2 and AdamW put the weight decay.

The model states of this setup are counted by :func:`llmlab.memory.measured_ledger`
(16 bytes per parameter with AdamW, the same as plain fp32 AdamW).
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_choice, check_float, check_int, check_module, check_tensor
from .._torch import resolve_dtype
from ..memory import OPTIMIZER_STATES

__all__ = ["MasterWeightsOptimizer", "mixed_precision_setup", "DynamicLossScaler", "adam_vs_adamw_step"]

HALF_DTYPES = (torch.float16, torch.bfloat16)


def _make_optimizer(name: str, params, lr: float = 1e-3, **kwargs) -> torch.optim.Optimizer:
    """The torch optimizer called ``name`` (a key of ``OPTIMIZER_STATES``) over ``params``."""
    check_choice("optimizer", name, OPTIMIZER_STATES)
    lr = check_float("lr", lr, low=0)
    if "weight_decay" in kwargs:
        kwargs["weight_decay"] = check_float("weight_decay", kwargs["weight_decay"], low=0)
    if name == "sgd_momentum":
        momentum = check_float("momentum", kwargs.pop("momentum", 0.9), low=0, high=1, high_open=True)
        return torch.optim.SGD(params, lr=lr, momentum=momentum, **kwargs)
    cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}[name]
    return cls(params, lr=lr, **kwargs)


class MasterWeightsOptimizer:
    """Mixed precision made explicit: a half-precision model, an fp32 master copy, an fp32 optimizer.

    ``params``: the parameters of the *low-precision* model (frozen ones are skipped);
    ``optimizer``: a name from :data:`llmlab.memory.OPTIMIZER_STATES`; ``master`` (optional):
    fp32 tensors to start the master copy from (default: the params upcast); further keywords
    (``lr``, ``weight_decay``, ...) go to the torch optimizer. The inner torch optimizer
    (``self.optimizer``) owns the fp32 master params and its states. One step:

    1. :meth:`grads_to_master`: ``master.grad = param.grad.float()`` (still loss-scaled, if scaled);
    2. the inner optimizer steps on the master (``scaler.step(self.optimizer)`` unscales first);
    3. :meth:`master_to_model`: copy the master back, rounding to half; the fp32 grads are freed,
       so between steps only the half grads are live (a real implementation converts bucket by
       bucket, so its transient fp32 grads are a fraction of 4N bytes).
    """

    def __init__(self, params, optimizer: str = "adamw", *, master=None, **optimizer_kwargs):
        params = list(params) if not isinstance(params, torch.Tensor) and hasattr(params, "__iter__") else None
        if params is None or not all(isinstance(p, torch.Tensor) for p in params):
            raise TypeError("params must be an iterable of tensors (e.g. model.parameters())")
        self.model_params = [p for p in params if p.requires_grad]
        if not self.model_params:
            raise ValueError("params must contain at least one trainable parameter")
        if master is None:
            master = [p.detach().float() for p in self.model_params]
        master = list(master)
        if len(master) != len(self.model_params):
            raise ValueError(f"master must hold one tensor per trainable param ({len(self.model_params)}), "
                             f"got {len(master)}")
        self.master_params = [m.detach().to(torch.float32).clone().requires_grad_(True) for m in master]
        self.optimizer = _make_optimizer(optimizer, self.master_params, **optimizer_kwargs)

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    def grads_to_master(self) -> None:
        for p, m in zip(self.model_params, self.master_params):
            m.grad = None if p.grad is None else p.grad.detach().to(torch.float32)

    @torch.no_grad()
    def master_to_model(self) -> None:
        for p, m in zip(self.model_params, self.master_params):
            p.copy_(m)  # rounds to the model's dtype
            m.grad = None

    def step(self) -> None:
        """One unscaled step: grads to master, optimizer step in fp32, master back to the model."""
        self.grads_to_master()
        self.optimizer.step()
        self.master_to_model()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.model_params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()


def mixed_precision_setup(model: nn.Module, dtype=torch.float16, *, optimizer: str = "adamw",
                          **optimizer_kwargs) -> MasterWeightsOptimizer:
    """Turn an fp32 ``model`` into a mixed-precision one *in place* and return its optimizer.

    The fp32 weights become the master copy (no rounding is lost); the model itself is cast to
    ``dtype`` (fp16 or bf16), so forward and backward run in half precision.
    """
    dtype = resolve_dtype(dtype, allowed=HALF_DTYPES)
    check_module("model", model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    master = [p.detach().float().clone() for p in trainable]
    model.to(dtype)
    return MasterWeightsOptimizer([p for p in model.parameters() if p.requires_grad], optimizer, master=master,
                                  **optimizer_kwargs)


class DynamicLossScaler:
    """Dynamic loss scaling, the rule of ``torch.amp.GradScaler`` written out.

    Backward runs on ``loss * scale``. Before the optimizer step the gradients are divided by
    ``scale`` (in fp32); if any is inf/NaN the step is skipped and ``scale *= backoff_factor``;
    after ``growth_interval`` finite steps in a row ``scale *= growth_factor``.
    """

    def __init__(self, *, init_scale: float = 2.0**16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000):
        self.scale = check_float("init_scale", init_scale, low=0, low_open=True)
        self.growth_factor = check_float("growth_factor", growth_factor, low=1, low_open=True)
        self.backoff_factor = check_float("backoff_factor", backoff_factor, low=0, high=1, low_open=True,
                                          high_open=True)
        self.growth_interval = check_int("growth_interval", growth_interval, low=1)
        self._good_steps = 0

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale

    @torch.no_grad()
    def unscale_(self, grads) -> bool:
        """Divide fp32 ``grads`` by the scale in place; return True if any is inf or NaN."""
        found_inf = False
        for g in grads:
            if g is None:
                continue
            g.mul_(1.0 / self.scale)
            found_inf = found_inf or not bool(torch.isfinite(g).all())
        return found_inf

    def update(self, found_inf: bool) -> None:
        """Back off after an overflow, grow after ``growth_interval`` good steps in a row.

        ``found_inf``: what :meth:`unscale_` returned (a real ``bool``)."""
        if found_inf:
            self.scale *= self.backoff_factor
            self._good_steps = 0
        else:
            self._good_steps += 1
            if self._good_steps == self.growth_interval:
                self.scale *= self.growth_factor
                self._good_steps = 0


def adam_vs_adamw_step(weight: torch.Tensor, grad: torch.Tensor, *, lr: float = 1e-2, weight_decay: float = 0.1,
                       betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> dict[str, torch.Tensor]:
    """The first step of Adam with L2 (``torch.optim.Adam(weight_decay=...)``) and of AdamW.

    Both use bias correction, m_hat = m / (1 - beta1^t), v_hat = v / (1 - beta2^t). They differ in
    *where* the decay goes: Adam+L2 adds ``wd * w`` to the gradient, so it is divided by sqrt(v_hat)
    like the rest; AdamW decouples it, ``w <- w - lr wd w - lr m_hat / (sqrt(v_hat) + eps)``.
    ``weight`` and ``grad``: floating tensors of the same shape. Returns ``{"adam_l2", "adamw"}``:
    the weights after one step of each (computed by torch), keyed by optimizer like a table row.
    """
    check_tensor("weight", weight, floating=True)
    check_tensor("grad", grad, floating=True)
    if grad.shape != weight.shape:
        raise ValueError(f"grad must have the shape of weight {tuple(weight.shape)}, got {tuple(grad.shape)}")
    lr = check_float("lr", lr, low=0)
    weight_decay = check_float("weight_decay", weight_decay, low=0)
    eps = check_float("eps", eps, low=0, low_open=True)
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    betas = tuple(check_float(f"betas[{i}]", b, low=0, high=1, high_open=True) for i, b in enumerate(betas))
    out = {}
    for name, cls in (("adam_l2", torch.optim.Adam), ("adamw", torch.optim.AdamW)):
        p = nn.Parameter(weight.detach().clone())
        opt = cls([p], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        p.grad = grad.detach().clone()
        opt.step()
        out[name] = p.detach()
    return out
