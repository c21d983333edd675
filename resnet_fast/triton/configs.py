"""Autotuning configurations: a set for H100 / A100, one fixed config for
the CPU interpreter (where every extra config is only extra time, and large
tiles are cheap: it pays per program, numpy does the tile).

The kernels tuned here never mutate their inputs: statistics go to partial
buffers every program overwrites, so no autotuning trial can leave state
behind for the next one (nothing needs restore_value / reset_to_zero).
"""

import triton

from ._common import interpreting


def _configs(gpu: list[dict], interpreter: dict, warps: list[int]) -> list[triton.Config]:
    if interpreting():
        return [triton.Config(interpreter, num_warps=1)]
    return [triton.Config(meta, num_warps=w) for meta, w in zip(gpu, warps, strict=True)]


# Elementwise tiles over rows x channels (BN apply forward / backward).
TILE = _configs(
    [
        {"BLOCK_R": 64, "BLOCK_C": 64},
        {"BLOCK_R": 32, "BLOCK_C": 128},
        {"BLOCK_R": 128, "BLOCK_C": 32},
        {"BLOCK_R": 256, "BLOCK_C": 16},
        {"BLOCK_R": 64, "BLOCK_C": 128},
        {"BLOCK_R": 512, "BLOCK_C": 8},
    ],
    {"BLOCK_R": 256, "BLOCK_C": 128},
    [4, 4, 4, 4, 8, 4],
)

# Per-channel reductions. BLOCK_R must divide 256 (see rows_per_program).
REDUCE = _configs(
    [
        {"BLOCK_R": 64, "BLOCK_C": 64},
        {"BLOCK_R": 32, "BLOCK_C": 128},
        {"BLOCK_R": 128, "BLOCK_C": 32},
        {"BLOCK_R": 256, "BLOCK_C": 16},
        {"BLOCK_R": 256, "BLOCK_C": 8},
    ],
    {"BLOCK_R": 256, "BLOCK_C": 128},
    [4, 4, 4, 4, 4],
)

ELEMENTWISE = _configs(
    [{"BLOCK": 1024}, {"BLOCK": 2048}, {"BLOCK": 4096}],
    {"BLOCK": 1 << 16},
    [4, 8, 8],
)


def _conv_configs() -> list[triton.Config]:
    if interpreting():
        return [triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=1)]
    # (BLOCK_M, BLOCK_N, BLOCK_K, stages, warps): bf16/fp16 tensor-core tiles
    # for H100 / A100 (large C_out, deep K), narrower ones for the 64-channel
    # layers and the grouped (ResNeXt) convolutions with few channels per group.
    shapes = [
        (128, 128, 64, 3, 8),
        (128, 128, 64, 4, 4),
        (128, 256, 64, 3, 8),
        (256, 128, 64, 3, 8),
        (128, 64, 64, 4, 4),
        (64, 128, 64, 4, 4),
        (128, 128, 32, 4, 4),
        (64, 64, 64, 4, 4),
        (128, 64, 32, 4, 4),
        (64, 32, 32, 4, 4),
        (64, 16, 16, 2, 2),
    ]
    return [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_stages=s, num_warps=w)
        for m, n, k, s, w in shapes
    ]


# Shared memory one H100 block may use (A100: 163 KB; Triton then fails the
# launch of a larger config, and the autotuner skips it).
SMEM_LIMIT = 227 * 1024


def conv_smem_bytes(config: triton.Config, element_size: int) -> int:
    """Shared memory of the convolution's software pipeline: num_stages
    buffered [BLOCK_M, BLOCK_K] input and [BLOCK_K, BLOCK_N] weight tiles.

    Matches what Triton allocates for sm_90 (the gate's compiled sizes:
    M=N=128, K=64, 4 stages in fp32 take 262144 B; 3 stages of 128x256 take
    294912 B)."""
    m, n, k = (config.kwargs[key] for key in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
    return config.num_stages * (m + n) * k * element_size


# IEEE fp32 and fp64 dots run on FMA units, the accumulator tile spread over
# the threads' registers next to the operand fragments: past 64 accumulator
# registers per thread (fp64: two per value) the kernel spills (the Triton
# gate, .ci/triton_gate.py, checks every kept config for sm_90).
FMA_ACC_REGS = 64


def fma_acc_regs(config: triton.Config, element_size: int) -> int:
    """32-bit registers per thread holding the accumulator of an FMA dot."""
    m, n = config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"]
    return m * n * max(element_size // 4, 1) // (32 * config.num_warps)


def _prune_conv(configs, named_args, **kwargs):
    """Drops tiles far wider than the problem (a group with 8 output
    channels gains nothing from BLOCK_N = 256, nor a stem with 3 input
    channels from BLOCK_K = 64), tiles whose pipeline cannot fit in shared
    memory in this dtype (fp64's large tiles), and, for dots without tensor
    cores (IEEE fp32, fp64), tiles whose accumulator would spill."""
    c_out, c_in = named_args["C_out_g"], named_args["C_in_g"]
    size = named_args["x_ptr"].element_size()
    fma = size == 8 or (size == 4 and kwargs.get("DOT_PRECISION") == "ieee")
    kept = [
        c
        for c in configs
        if c.kwargs["BLOCK_N"] <= max(16, triton.next_power_of_2(c_out))
        and c.kwargs["BLOCK_K"] <= max(16, triton.next_power_of_2(c_in))
        and conv_smem_bytes(c, size) <= SMEM_LIMIT
        and (not fma or fma_acc_regs(c, size) <= FMA_ACC_REGS)
    ]
    return kept or configs[-1:]


CONV = _conv_configs()
CONV_PRUNE = {"early_config_prune": _prune_conv}
# Rows per block of the training epilogue's partial statistics: the smallest
# BLOCK_M of CONV, which every config's BLOCK_M is a multiple of.
CONV_STATS_ROWS = min(c.kwargs["BLOCK_M"] for c in CONV)
