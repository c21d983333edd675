"""One fused-BN test case: inputs, our result, the fp64 oracle and plain PyTorch.

Used by test_batch_norm.py; kept apart so that the test file reads as a list
of properties.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from helpers import channel_params, make_activation, randn
from torch import Tensor
from torch._prims_common import suggest_memory_format

from resnet_fast import reference
from resnet_fast._ops.fused import batch_norm_act

# ReLU boundary: elements whose fp64 pre-activation is this close to 0 may
# flip between implementations. They get a zero upstream gradient (so masks
# cannot differ in the backward) and are left out of forward comparisons.
BOUNDARY = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 3e-2}

OPS = {  # name: (residual, relu)
    "bn": (False, False),
    "bn_relu": (False, True),
    "bn_add": (True, False),
    "bn_add_relu": (True, True),
}


@dataclass
class Result:
    out: Tensor
    grads: dict[str, Tensor]
    running_mean: Tensor | None
    running_var: Tensor | None


@dataclass
class BnCase:
    op: str
    x: Tensor
    residual: Tensor | None
    weight: Tensor | None
    bias: Tensor | None
    running_mean: Tensor | None
    running_var: Tensor | None
    training: bool
    momentum: float = 0.1
    eps: float = 1e-5

    @property
    def relu(self) -> bool:
        return OPS[self.op][1]

    @staticmethod
    def make(op, shape, layout, dtype, training, gen, device="cpu", affine=True, running=True):
        residual, _ = OPS[op]
        param_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        w, b, rm, rv = channel_params(shape[1], gen, device, param_dtype)
        return BnCase(
            op=op,
            x=make_activation(shape, layout, dtype, gen, device, scale=2.0, shift=0.5),
            residual=make_activation(shape, layout, dtype, gen, device) if residual else None,
            weight=w if affine else None,
            bias=b if affine else None,
            running_mean=rm if running else None,
            running_var=rv if running else None,
            training=training,
        )

    def _inputs(self, convert):
        leaves = {"x": self.x, "residual": self.residual, "weight": self.weight, "bias": self.bias}
        return {
            k: None if v is None else convert(v).detach().requires_grad_()
            for k, v in leaves.items()
        }

    def _stats(self, convert):
        rm = None if self.running_mean is None else convert(self.running_mean).clone()
        rv = None if self.running_var is None else convert(self.running_var).clone()
        return rm, rv

    def pre_activation64(self) -> Tensor:
        rm, rv = self._stats(lambda t: t.double())
        return reference.batch_norm_act(
            self.x.double(), rm, rv,
            None if self.weight is None else self.weight.double(),
            None if self.bias is None else self.bias.double(),
            self.training, self.momentum, self.eps, relu=False,
            residual=None if self.residual is None else self.residual.double(),
        )  # fmt: skip

    def boundary(self) -> Tensor:
        if not self.relu:
            return torch.zeros(self.x.shape, dtype=torch.bool, device=self.x.device)
        return self.pre_activation64().abs() < BOUNDARY[self.x.dtype]

    def grad_out(self, gen) -> Tensor:
        g = randn(self.x.shape, gen, self.x.dtype).to(self.x.device).masked_fill(self.boundary(), 0)
        # In the memory format of the activation, as a model's gradients are.
        return g.contiguous(memory_format=suggest_memory_format(self.x))

    def _run(self, fn, convert, grad_out) -> Result:
        leaves = self._inputs(convert)
        rm, rv = self._stats(convert)
        out = fn(leaves, rm, rv)
        out.backward(convert(grad_out))
        grads = {k: v.grad for k, v in leaves.items() if v is not None}
        return Result(out.detach(), grads, rm, rv)

    def run_ours(self, grad_out) -> Result:
        def fn(t, rm, rv):
            return batch_norm_act(
                t["x"], t["residual"], rm, rv, t["weight"], t["bias"],
                self.training, self.momentum, self.eps, self.relu,
            )  # fmt: skip

        return self._run(fn, lambda t: t, grad_out)

    def run_oracle(self, grad_out) -> Result:
        def fn(t, rm, rv):
            return reference.batch_norm_act(
                t["x"], rm, rv, t["weight"], t["bias"], self.training, self.momentum,
                self.eps, self.relu, t["residual"],
            )  # fmt: skip

        return self._run(fn, lambda t: t.double(), grad_out)

    def run_torch(self, grad_out) -> Result:
        """Plain PyTorch in the input dtype (parameters stay in their dtype)."""

        def fn(t, rm, rv):
            y = F.batch_norm(
                t["x"], rm, rv, t["weight"], t["bias"], self.training, self.momentum, self.eps
            )
            if t["residual"] is not None:
                y = y + t["residual"]
            return F.relu(y) if self.relu else y

        return self._run(fn, lambda t: t, grad_out)
