"""Eval-mode support of the modules that fold BN into their convolutions
(the blocks, the stems, convert()'s fused graphs): when a BN can fold, and
the cache of folded weights each module keeps (resnet_fast.conv.inference).
"""

from torch import nn

from ..conv.inference import conv_bn_eval
from .scripting import NotScriptable
from .state_dict import check_loadable


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
    )


class FoldingMixin(NotScriptable, nn.Module):
    """A module that runs some conv + BN pairs folded in eval mode, caching
    the folded weights.

    eval() keeps the cache (the key alone decides whether a fold is fresh);
    train() and moving the module (to(), cuda(), half()) release it, as its
    tensors are dead weight until the next eval-mode call. torch.jit.script
    refuses it (see scripting.py); load_state_dict loads all or nothing.
    """

    def train(self, mode: bool = True):
        if mode:
            self.__dict__.get("_fold_cache", {}).clear()
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self.__dict__.get("_fold_cache", {}).clear()
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

    def _conv_bn(self, conv, bn, x, key, residual=None, relu=True):
        cache = self.__dict__.setdefault("_fold_cache", {})
        return conv_bn_eval(conv, bn, x, cache, key, residual, relu)
