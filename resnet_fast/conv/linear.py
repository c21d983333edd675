"""An eval-mode classifier (nn.Linear) through oneDNN, its weight prepacked
once into oneDNN's blocked layout and cached like a folded convolution
(fold_cache.py: never stale, frozen or checked by value).

F.linear runs MKL's GEMM, which on an AVX-512 CPU takes its AVX2 code for
this shape: ResNet-50's 2048 -> 1000 classifier at batch 16 took 0.78 ms of
a 27.6 ms forward on a 2-core EPYC (torch.profiler), and 0.64 ms warm or
0.88 ms with the caches flushed when timed alone, against 0.17 / 0.30 ms for
oneDNN's prepacked linear (0.33 / 0.44 ms unpacked). The results differ
from F.linear's in the last bits (another summation order).
"""

import torch
from torch import Tensor, nn

from .fold_cache import FoldCache, cached_fold, cached_pack
from .folded import ONEDNN

_PACKS = ONEDNN and all(
    hasattr(torch.ops.mkldnn, op) for op in ("_reorder_linear_weight", "_linear_pointwise")
)


def _prepacks(fc: nn.Linear, x: Tensor) -> bool:
    """Whether ``fc(x)`` may run prepacked: a plain nn.Linear without hooks,
    a dense 2-D float32 CPU input of its width, no autocast, no gradient
    needed and not under torch.compile (whose freezing prepacks it itself)."""
    if not _PACKS or type(fc) is not nn.Linear or fc._forward_hooks or fc._forward_pre_hooks:
        return False
    if torch.compiler.is_compiling() or torch.is_autocast_enabled("cpu"):
        return False
    if x.dim() != 2 or x.shape[1] != fc.in_features or not x.is_contiguous():
        return False
    parameters = [t for t in (fc.weight, fc.bias) if t is not None]
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in (x, *parameters)):
        return False
    if any(t.is_inference() for t in parameters):  # no version counter: nothing to cache
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in (x, *parameters)))


def linear_eval(fc: nn.Linear, x: Tensor, cache: FoldCache, key: str = "fc") -> Tensor:
    """``fc(x)``, through oneDNN with the weight prepacked where it may
    (:func:`_prepacks`); else fc's own forward.

    Args:
        fc: the classifier, [out_features, in_features] weight.
        x: [N, in_features].
        cache: the owning module's FoldCache.
        key: the classifier's name in the cache.

    Returns:
        [N, out_features].
    """
    if not _prepacks(fc, x):
        return fc(x)
    weight, bias = fc.weight, fc.bias
    inputs = [weight] if bias is None else [weight, bias]
    fold = cached_fold(
        cache, key, inputs, inputs, 0.0,
        lambda: (weight.detach(), None if bias is None else bias.detach()),
    )  # fmt: skip
    batch = x.shape[0]
    packed = cached_pack(
        cache, key, batch, lambda: torch.ops.mkldnn._reorder_linear_weight(fold.weight, batch)
    )
    return torch.ops.mkldnn._linear_pointwise.default(x, packed, fold.bias, "none", [], "")
