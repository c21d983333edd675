"""Triton kernels of the fused BatchNorm ops (bn_act, bn_add_act).

Every kernel sees an [N, C, H, W] operand as a matrix of rows (n, h, w) by
channels, addressed through its own four strides, so NCHW, channels_last and
strided views all run without a copy. A tile is [BLOCK_R, BLOCK_C] when the
channels are the contiguous axis (CH_INNER) and [BLOCK_C, BLOCK_R] otherwise,
so that the fast axis of the tile is the contiguous one in memory; per-channel
vectors are kept 2-D (keep_dims) so the same code serves both orientations.
Offsets are IDX integers: int32 whenever the launcher proves every operand's
offsets fit (see offset_dtype), int64 otherwise.

Numerics follow csrc/cpu/kernels/kernels_impl.h: statistics are accumulated
on x - shift[c] (shift = one sample of the channel, so the subtraction is
exact and the data is centered to about one standard deviation), merged per
chunk with Chan's formula, and the per-program partials are merged in fp64 by
the launcher; centering in the apply kernels subtracts an fp64 mean split in
two acc-type halves (mean_hi, mean_lo).
"""

import triton
import triton.language as tl

from ._store import to_dtype


@triton.jit
def _rows(r0, HW, W, BLOCK_R: tl.constexpr, IDX: tl.constexpr):
    """Row indices r0 .. r0 + BLOCK_R and their (n, h, w) in the offset dtype."""
    r = r0 + tl.arange(0, BLOCK_R)
    n = r // HW
    hw = r - n * HW
    h = hw // W
    w = hw - h * W
    return r, n.to(IDX), h.to(IDX), w.to(IDX)


@triton.jit
def _tile(n, h, w, c, sn, sc, sh, sw, CH_INNER: tl.constexpr, IDX: tl.constexpr):
    """Element offsets of a tile of rows (n, h, w) x channels c."""
    row = n * sn + h * sh + w * sw
    col = c.to(IDX) * sc
    if CH_INNER:
        return row[:, None] + col[None, :]
    else:
        return col[:, None] + row[None, :]


@triton.jit
def _mask(r, NHW, c, C, CH_INNER: tl.constexpr):
    if CH_INNER:
        return (r < NHW)[:, None] & (c < C)[None, :]
    else:
        return (c < C)[:, None] & (r < NHW)[None, :]


@triton.jit
def _channel(ptr, c, C, CH_INNER: tl.constexpr):
    """A [C] vector at channels c, shaped to broadcast against a tile."""
    v = tl.load(ptr + c, mask=c < C, other=0.0)
    if CH_INNER:
        return v[None, :]
    else:
        return v[:, None]


@triton.jit
def _store_channel(ptr, c, C, v, CH_INNER: tl.constexpr):
    if CH_INNER:
        tl.store(ptr + c[None, :], v, mask=(c < C)[None, :])
    else:
        tl.store(ptr + c[:, None], v, mask=(c < C)[:, None])


@triton.jit
def _row_sum(v, CH_INNER: tl.constexpr):
    """Per-channel sums of a tile, kept 2-D."""
    if CH_INNER:
        return tl.sum(v, axis=0, keep_dims=True)
    else:
        return tl.sum(v, axis=1, keep_dims=True)


@triton.jit
def _bn_stats_fwd_kernel(
    x_ptr,  # [N, C, H, W]
    shift_ptr,  # [C] acc: one sample per channel
    part_mean_ptr,  # [P, C] acc: mean of x - shift over the program's rows
    part_m2_ptr,  # [P, C] acc: sum of squared deviations from that mean
    NHW, HW, W, C,
    sxn, sxc, sxh, sxw,
    ROWS_PER_PROG,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
    CH_INNER: tl.constexpr,
    ACC: tl.constexpr,
    IDX: tl.constexpr,
):  # fmt: skip
    pid_r = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    shift = _channel(shift_ptr, c, C, CH_INNER).to(ACC)
    mean = shift * 0
    m2 = shift * 0
    start = pid_r * ROWS_PER_PROG
    end = tl.minimum(start + ROWS_PER_PROG, NHW)
    for r0 in range(start, end, BLOCK_R):
        r, n, h, w = _rows(r0, HW, W, BLOCK_R, IDX)
        mask = _mask(r, end, c, C, CH_INNER)
        x = tl.load(x_ptr + _tile(n, h, w, c, sxn, sxc, sxh, sxw, CH_INNER, IDX), mask=mask)
        d = tl.where(mask, x.to(ACC) - shift, 0.0)
        # Chan's merge of this chunk's (count, mean, M2) into the running one.
        n_prev = (r0 - start).to(ACC)
        n_chunk = tl.minimum(end - r0, BLOCK_R).to(ACC)
        chunk_mean = _row_sum(d, CH_INNER) / n_chunk
        dev = tl.where(mask, d - chunk_mean, 0.0)
        chunk_m2 = _row_sum(dev * dev, CH_INNER)
        delta = chunk_mean - mean
        n_total = n_prev + n_chunk
        mean += delta * (n_chunk / n_total)
        m2 += chunk_m2 + delta * delta * (n_prev * n_chunk / n_total)
    _store_channel(part_mean_ptr + pid_r * C, c, C, mean, CH_INNER)
    _store_channel(part_m2_ptr + pid_r * C, c, C, m2, CH_INNER)


@triton.jit
def _bn_act_fwd_kernel(
    x_ptr,  # [N, C, H, W]
    res_ptr,  # [N, C, H, W] or a dummy when not HAS_RES
    out_ptr,  # [N, C, H, W]
    mean_hi_ptr, mean_lo_ptr, scale_ptr, bias_ptr,  # [C] acc
    NHW, HW, W, C,
    sxn, sxc, sxh, sxw,
    srn, src, srh, srw,
    son, soc, soh, sow,
    HAS_RES: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
    CH_INNER: tl.constexpr,
    ACC: tl.constexpr,
    IDX: tl.constexpr,
    EXPLICIT_RNE: tl.constexpr,
):  # fmt: skip
    """out = act((x - mean) * scale + bias [+ residual])."""
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    r, n, h, w = _rows(tl.program_id(0) * BLOCK_R, HW, W, BLOCK_R, IDX)
    mask = _mask(r, NHW, c, C, CH_INNER)
    x = tl.load(x_ptr + _tile(n, h, w, c, sxn, sxc, sxh, sxw, CH_INNER, IDX), mask=mask).to(ACC)
    xc = (x - _channel(mean_hi_ptr, c, C, CH_INNER)) - _channel(mean_lo_ptr, c, C, CH_INNER)
    y = xc * _channel(scale_ptr, c, C, CH_INNER) + _channel(bias_ptr, c, C, CH_INNER)
    if HAS_RES:
        res = tl.load(res_ptr + _tile(n, h, w, c, srn, src, srh, srw, CH_INNER, IDX), mask=mask)
        y += res.to(ACC)
    if RELU:
        y = tl.maximum(y, 0.0)
    out_offsets = _tile(n, h, w, c, son, soc, soh, sow, CH_INNER, IDX)
    tl.store(out_ptr + out_offsets, to_dtype(y, out_ptr.dtype.element_ty, EXPLICIT_RNE), mask=mask)


@triton.jit
def _bn_act_bwd_reduce_kernel(
    dy_ptr,  # [N, C, H, W]
    x_ptr,  # [N, C, H, W]
    res_ptr,  # [N, C, H, W] or a dummy when not HAS_RES
    gres_ptr,  # [N, C, H, W] grad_residual (= g) or a dummy when not HAS_RES
    mean_hi_ptr, mean_lo_ptr, scale_ptr, bias_ptr,  # [C] acc, as in the forward
    part_g_ptr,  # [P, C] acc: sum of g over the program's rows
    part_gx_ptr,  # [P, C] acc: sum of g * (x - mean)
    NHW, HW, W, C,
    sdn, sdc, sdh, sdw,
    sxn, sxc, sxh, sxw,
    srn, src, srh, srw,
    sgn, sgc, sgh, sgw,
    ROWS_PER_PROG,
    HAS_RES: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
    CH_INNER: tl.constexpr,
    ACC: tl.constexpr,
    IDX: tl.constexpr,
    EXPLICIT_RNE: tl.constexpr,
):  # fmt: skip
    """g = dy * [pre > 0] (pre recomputed as in the forward); per-program
    sums of g and g * (x - mean); with a residual, grad_residual = g too."""
    pid_r = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mean_hi = _channel(mean_hi_ptr, c, C, CH_INNER)
    mean_lo = _channel(mean_lo_ptr, c, C, CH_INNER)
    scale = _channel(scale_ptr, c, C, CH_INNER)
    bias = _channel(bias_ptr, c, C, CH_INNER)
    sum_g = scale * 0
    sum_gx = scale * 0
    start = pid_r * ROWS_PER_PROG
    end = tl.minimum(start + ROWS_PER_PROG, NHW)
    for r0 in range(start, end, BLOCK_R):
        r, n, h, w = _rows(r0, HW, W, BLOCK_R, IDX)
        mask = _mask(r, end, c, C, CH_INNER)
        x = tl.load(x_ptr + _tile(n, h, w, c, sxn, sxc, sxh, sxw, CH_INNER, IDX), mask=mask)
        dy = tl.load(dy_ptr + _tile(n, h, w, c, sdn, sdc, sdh, sdw, CH_INNER, IDX), mask=mask)
        xc = (x.to(ACC) - mean_hi) - mean_lo
        g = dy.to(ACC)
        if RELU:
            pre = xc * scale + bias
            if HAS_RES:
                res_offsets = _tile(n, h, w, c, srn, src, srh, srw, CH_INNER, IDX)
                pre += tl.load(res_ptr + res_offsets, mask=mask).to(ACC)
            g = tl.where(pre > 0, g, 0.0)
        if HAS_RES:
            g_offsets = _tile(n, h, w, c, sgn, sgc, sgh, sgw, CH_INNER, IDX)
            g_stored = to_dtype(g, gres_ptr.dtype.element_ty, EXPLICIT_RNE)
            tl.store(gres_ptr + g_offsets, g_stored, mask=mask)
        g = tl.where(mask, g, 0.0)
        sum_g += _row_sum(g, CH_INNER)
        sum_gx += _row_sum(g * tl.where(mask, xc, 0.0), CH_INNER)
    _store_channel(part_g_ptr + pid_r * C, c, C, sum_g, CH_INNER)
    _store_channel(part_gx_ptr + pid_r * C, c, C, sum_gx, CH_INNER)


@triton.jit
def _bn_act_bwd_apply_kernel(
    g_ptr,  # [N, C, H, W] dy, or g when the mask was applied already
    x_ptr,  # [N, C, H, W]
    dx_ptr,  # [N, C, H, W]
    mean_hi_ptr, mean_lo_ptr, scale_ptr, bias_ptr,  # [C] acc, as in the forward
    a_ptr, b_ptr, d_ptr,  # [C] acc: dx = a * g + b * (x - mean) + d
    NHW, HW, W, C,
    sgn, sgc, sgh, sgw,
    sxn, sxc, sxh, sxw,
    sdn, sdc, sdh, sdw,
    MASK_FROM_X: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
    CH_INNER: tl.constexpr,
    ACC: tl.constexpr,
    IDX: tl.constexpr,
    EXPLICIT_RNE: tl.constexpr,
):  # fmt: skip
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    r, n, h, w = _rows(tl.program_id(0) * BLOCK_R, HW, W, BLOCK_R, IDX)
    mask = _mask(r, NHW, c, C, CH_INNER)
    x = tl.load(x_ptr + _tile(n, h, w, c, sxn, sxc, sxh, sxw, CH_INNER, IDX), mask=mask).to(ACC)
    g = tl.load(g_ptr + _tile(n, h, w, c, sgn, sgc, sgh, sgw, CH_INNER, IDX), mask=mask).to(ACC)
    xc = (x - _channel(mean_hi_ptr, c, C, CH_INNER)) - _channel(mean_lo_ptr, c, C, CH_INNER)
    if MASK_FROM_X:
        pre = xc * _channel(scale_ptr, c, C, CH_INNER) + _channel(bias_ptr, c, C, CH_INNER)
        g = tl.where(pre > 0, g, 0.0)
    dx = _channel(a_ptr, c, C, CH_INNER) * g + _channel(b_ptr, c, C, CH_INNER) * xc
    dx += _channel(d_ptr, c, C, CH_INNER)
    dx_offsets = _tile(n, h, w, c, sdn, sdc, sdh, sdw, CH_INNER, IDX)
    tl.store(dx_ptr + dx_offsets, to_dtype(dx, dx_ptr.dtype.element_ty, EXPLICIT_RNE), mask=mask)
