"""The tail of a residual block written with the fused functional ops, run
eagerly and under torch.compile(fullgraph=True): the compiled graph must give
the eager outputs, gradients and running statistics (any backend)."""

import torch
from helpers import assert_close

import resnet_fast.functional as RF


def block_tail(x, r, rm1, rv1, rm2, rv2, w, b):
    """relu(bn(x)) -> relu(bn(.) + r) -> relu(. + r), training mode.

    Shape: x, r [N, C, H, W]; rm*, rv*, w, b [C] -> [N, C, H, W].
    """
    y = RF.batch_norm_relu(x, rm1, rv1, w, b, training=True)
    y = RF.batch_norm_add_relu(y, r, rm2, rv2, w, b, training=True)
    return RF.add_relu(y, r)


def assert_compiled_tail_matches_eager(x, r, w, b, rm, rv) -> list:
    """Runs block_tail eagerly and compiled (float32 operands, fresh copies of
    the running statistics each), compares them, and returns the compiled
    run's running statistics [rm1, rv1, rm2, rv2]."""
    torch._dynamo.reset()
    results = []
    for fn in (block_tail, torch.compile(block_tail, fullgraph=True)):
        stats = [rm.clone(), rv.clone(), rm.clone(), rv.clone()]
        leaves = [t.detach().requires_grad_() for t in (x, r, w, b)]
        out = fn(leaves[0], leaves[1], *stats, leaves[2], leaves[3])
        out.backward(torch.ones_like(out))
        results.append((out.detach(), [t.grad for t in leaves], stats))
    (out_e, grads_e, stats_e), (out_c, grads_c, stats_c) = results
    assert_close(out_c, out_e, torch.float32, "out")
    for ge, gc in zip(grads_e, grads_c, strict=True):
        assert_close(gc, ge, torch.float32, "grad")
    for se, sc in zip(stats_e, stats_c, strict=True):
        assert_close(sc, se, torch.float32, "running stat")
    return stats_c
