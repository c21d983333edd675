"""Triton implicit-GEMM 2D convolution with fused epilogues.

The convolution is a GEMM per group: rows m = (n, oh, ow) of the output
(M = N * H_out * W_out), columns the group's output channels, and a
reduction over k = (kh, kw, ci) of KH * KW * C_in / groups. Tiles of the
input are gathered on the fly (no im2col buffer): for each (kh, kw) the
kernel loads a [BLOCK_M, BLOCK_K] slab of input channels at the shifted
positions, zero where the window falls in the padding. With NHWC
(channels_last) operands the channels are contiguous, so every load is
coalesced; any strides are accepted. Element offsets are IDX integers:
int32 whenever the launcher proves every operand's offsets fit (see
offset_dtype), half the registers and instructions of int64 offsets.

Epilogues, applied to the fp32 accumulator before the only write of the
output:
  * bias [C_out] (BN folded into the weights for inference),
  * residual [N, C_out, H_out, W_out] added,
  * ReLU,
  * STATS (training): per-channel (mean, M2) of every STATS_ROWS rows of
    the output as stored (after rounding to the output dtype), written to a
    [P, C_out] partial buffer; the launcher merges the P rows in fp64
    (Chan), so the BN statistics need no second pass over the output.
    Centering per block of rows keeps this stable while |mean| / std of a
    channel stays well below 1e3 (true of convolution outputs; the BN stats
    kernel, which shifts by a sample, covers the rest).
"""

import triton
import triton.language as tl

from ._store import to_dtype


@triton.jit
def _conv2d_fwd_kernel(
    x_ptr,  # [N, C_in, H, W], any strides (channels_last is the fast case)
    w_ptr,  # [C_out, C_in / groups, KH, KW], any strides
    bias_ptr,  # [C_out] acc or a dummy when not HAS_BIAS
    res_ptr,  # [N, C_out, H_out, W_out] or a dummy when not HAS_RES
    out_ptr,  # [N, C_out, H_out, W_out]
    part_mean_ptr,  # [P, C_out] ACC: mean per STATS_ROWS rows (STATS only)
    part_m2_ptr,  # [P, C_out] ACC: M2 per STATS_ROWS rows (STATS only)
    M, H, W, H_out, W_out, C_in_g, C_out_g, C_out,
    sxn, sxc, sxh, sxw,
    swo, swi, swh, sww,
    srn, src, srh, srw,
    son, soc, soh, sow,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
    KH: tl.constexpr,
    KW: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_RES: tl.constexpr,
    RELU: tl.constexpr,
    STATS: tl.constexpr,
    ACC: tl.constexpr,
    IDX: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    STATS_ROWS: tl.constexpr,
    INTERPRETED: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    group = tl.program_id(2)

    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = m < M
    hw_out = H_out * W_out
    n = m // hw_out
    ohw = m - n * hw_out
    oh = ohw // W_out
    ow = ohw - oh * W_out
    x_row = n.to(IDX) * sxn
    ih0 = oh * stride_h - pad_h
    iw0 = ow * stride_w - pad_w

    co_g = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # within the group
    co_ok = co_g < C_out_g
    co = (group * C_out_g + co_g).to(IDX)
    ci_base = group * C_in_g
    k = tl.arange(0, BLOCK_K)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC)
    for khw in range(0, KH * KW):
        kh = khw // KW
        kw = khw - kh * KW
        ih = ih0 + kh * dil_h
        iw = iw0 + kw * dil_w
        pos_ok = m_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        x_pos = x_row + ih.to(IDX) * sxh + iw.to(IDX) * sxw
        w_pos = co * swo + tl.cast(kh, IDX) * swh + tl.cast(kw, IDX) * sww
        for c0 in range(0, C_in_g, BLOCK_K):
            ci = c0 + k
            ci_ok = ci < C_in_g
            a = tl.load(
                x_ptr + x_pos[:, None] + ((ci_base + ci).to(IDX) * sxc)[None, :],
                mask=pos_ok[:, None] & ci_ok[None, :],
                other=0.0,
            )
            b = tl.load(
                w_ptr + w_pos[None, :] + (ci.to(IDX) * swi)[:, None],
                mask=ci_ok[:, None] & co_ok[None, :],
                other=0.0,
            )
            if INTERPRETED and a.dtype == tl.bfloat16:
                # Triton's CPU interpreter multiplies bf16 tiles wrongly; bf16
                # products are exact in fp32, so this is the same GEMM.
                a = a.to(tl.float32)
                b = b.to(tl.float32)
                acc = tl.dot(a, b, acc, input_precision="ieee", out_dtype=ACC)
            else:
                acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC)

    y = acc
    if HAS_BIAS:
        y += tl.load(bias_ptr + co, mask=co_ok, other=0.0).to(ACC)[None, :]
    tile_ok = m_ok[:, None] & co_ok[None, :]
    o_row = n.to(IDX) * son + oh.to(IDX) * soh + ow.to(IDX) * sow
    if HAS_RES:
        r_row = n.to(IDX) * srn + oh.to(IDX) * srh + ow.to(IDX) * srw
        res = tl.load(res_ptr + r_row[:, None] + (co * src)[None, :], mask=tile_ok)
        y += res.to(ACC)
    if RELU:
        y = tl.maximum(y, 0.0)
    out_offsets = o_row[:, None] + (co * soc)[None, :]
    y_stored = to_dtype(y, out_ptr.dtype.element_ty, INTERPRETED)
    tl.store(out_ptr + out_offsets, y_stored, mask=tile_ok)
    if STATS:
        # Statistics of the values BN will read: the output as stored, per
        # block of STATS_ROWS rows (a size every config divides, so the
        # partial buffer does not depend on the config autotuning picks).
        # Taken after the store, from the stored tile alone: the fp32 tile
        # y is dead by then, which leaves the registers to the reductions.
        SUB: tl.constexpr = BLOCK_M // STATS_ROWS
        stored = tl.where(tile_ok, y_stored.to(ACC), 0.0)
        stored = tl.reshape(stored, (SUB, STATS_ROWS, BLOCK_N))
        sub = tl.arange(0, SUB)
        row = pid_m * BLOCK_M + sub[:, None] * STATS_ROWS + tl.arange(0, STATS_ROWS)[None, :]
        sub_ok = (row < M)[:, :, None] & co_ok[None, None, :]
        rows = tl.minimum(tl.maximum(M - (pid_m * BLOCK_M + sub * STATS_ROWS), 1), STATS_ROWS)
        sub_mean = tl.sum(stored, axis=1) / rows.to(ACC)[:, None]
        dev = tl.where(sub_ok, stored - sub_mean[:, None, :], 0.0)
        sub_m2 = tl.sum(dev * dev, axis=1)
        part_row = pid_m * SUB + sub
        part = (part_row * C_out)[:, None] + co[None, :]
        part_ok = (part_row * STATS_ROWS < M)[:, None] & co_ok[None, :]
        tl.store(part_mean_ptr + part, sub_mean, mask=part_ok)
        tl.store(part_m2_ptr + part, sub_m2, mask=part_ok)
