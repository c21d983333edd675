"""Eval-mode support of the modules that fold BN into their convolutions
(the blocks, the stems, convert()'s fused graphs): when a BN can fold, the
cache of folded (and prepacked) weights each module keeps
(resnet_fast.conv.inference; the zoo models' classifier too,
resnet_fast.conv.linear), and freeze(), which declares a model's tensors
constant for deployment.
"""

from torch import nn

from ..conv.inference import FoldCache, conv_bn_eval
from .scripting import NotScriptable
from .state_dict import check_loadable


def has_hooks(*modules: nn.Module | None) -> bool:
    """Whether a module has forward hooks: a fused path that calls its
    tensors directly would skip them (torch.nn.utils.prune recomputes the
    weight in one), so such a module runs its own forward."""
    return any(m is not None and (m._forward_hooks or m._forward_pre_hooks) for m in modules)


def can_fold(bn: nn.Module) -> bool:
    """Eval-mode BN that uses running statistics (foldable)."""
    return isinstance(bn, nn.BatchNorm2d) and not bn.training and bn.running_mean is not None


def foldable_downsample(downsample: nn.Module | None) -> bool:
    """torchvision's projection shortcut: Sequential(Conv2d, BatchNorm2d)."""
    return (
        isinstance(downsample, nn.Sequential)
        and len(downsample) == 2
        and isinstance(downsample[0], nn.Conv2d)
        and can_fold(downsample[1])
        and not has_hooks(downsample, *downsample)
    )


class FoldingMixin(NotScriptable, nn.Module):
    """A module that runs some conv + BN pairs folded in eval mode, caching
    the folded weights (resnet_fast.conv.inference.FoldCache).

    eval() keeps the cache (whether a fold is fresh is proven at each call);
    train() and moving the module (to(), cuda(), half()) release it, as its
    tensors are dead weight until the next eval-mode call. torch.jit.script
    refuses it (see scripting.py); load_state_dict loads all or nothing.
    """

    @property
    def fold_cache(self) -> FoldCache:
        """This module's cache of folded convolutions."""
        cache = self.__dict__.get("_fold_cache")
        if cache is None:
            cache = self.__dict__["_fold_cache"] = FoldCache()
        return cache

    def train(self, mode: bool = True):
        if mode:
            self.fold_cache.clear()
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self.fold_cache.clear()
        return super()._apply(fn, *args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """nn.Module.load_state_dict, all or nothing (see state_dict.py); the
        folds of the loaded tensors are recomputed on the next eval call."""
        check_loadable(self, state_dict, strict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def __getstate__(self):
        # The cache is derived data (and may hold oneDNN tensors, which do not
        # pickle): torch.save and copy.deepcopy leave it behind.
        state = super().__getstate__()
        state.pop("_fold_cache", None)
        return state

    def _conv_bn(self, conv, bn, x, key, residual=None, relu=True, reuse_residual=False):
        return conv_bn_eval(conv, bn, x, self.fold_cache, key, residual, relu, reuse_residual)


def freeze(model: nn.Module, frozen: bool = True) -> nn.Module:
    """Declares ``model``'s parameters and buffers constant for inference,
    as PyTorch's own freezing does (torch.jit.freeze, inductor's freezing).

    Eval-mode folds are then kept without comparing the tensors' values on
    each call (see resnet_fast.conv.inference): every change their version
    counters see (an optimizer step, ``copy_``, ``load_state_dict``, a
    replaced parameter) is still refolded, but a write that bypasses the
    version counter (through ``.data`` or a NumPy view) is not seen until
    ``freeze(model, False)``. Without freeze every eval call compares them,
    which costs one read of the weights.

    Args:
        model: a model holding resnet_fast modules (converted or from the zoo).
        frozen: True to freeze, False to go back to the checked default.

    Returns:
        ``model``.
    """
    for module in model.modules():
        if isinstance(module, FoldingMixin):
            module.fold_cache.frozen = frozen
            module.fold_cache.clear()
    return model
