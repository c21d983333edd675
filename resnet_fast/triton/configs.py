"""Autotuning configurations: a set for H100 / A100, one fixed config for
the CPU interpreter (where every extra config is only extra time, and large
tiles are cheap: it pays per program, numpy does the tile).

The kernels tuned here never mutate their inputs: statistics go to partial
buffers every program overwrites, so no autotuning trial can leave state
behind for the next one (nothing needs restore_value / reset_to_zero).
"""

import triton

from .interpreter import triton_interpreting


def _configs(gpu: list[dict], interpreter: dict, warps: list[int]) -> list[triton.Config]:
    # Each Config gets its own copy: the tile dicts are shared between lists.
    if triton_interpreting():
        return [triton.Config(dict(interpreter), num_warps=1)]
    return [triton.Config(dict(meta), num_warps=w) for meta, w in zip(gpu, warps, strict=True)]


# Rows x channels tiles that both the elementwise and the reduction kernels
# try (each adds its own), and the one tile the interpreter runs.
_ROW_CHANNEL_TILES = [
    {"BLOCK_R": 64, "BLOCK_C": 64},
    {"BLOCK_R": 32, "BLOCK_C": 128},
    {"BLOCK_R": 128, "BLOCK_C": 32},
    {"BLOCK_R": 256, "BLOCK_C": 16},
]
_ROW_CHANNEL_INTERPRETER = {"BLOCK_R": 256, "BLOCK_C": 128}

# Elementwise tiles over rows x channels (BN apply forward / backward).
TILE = _configs(
    [*_ROW_CHANNEL_TILES, {"BLOCK_R": 64, "BLOCK_C": 128}, {"BLOCK_R": 512, "BLOCK_C": 8}],
    _ROW_CHANNEL_INTERPRETER,
    [4, 4, 4, 4, 8, 4],
)

# Per-channel reductions. BLOCK_R must divide 256 (see rows_per_program).
# 8 warps: 16 elements per thread (8 for 256 x 8). The loop body holds a
# tile of every operand (up to four in the backward) next to the running
# sums: at 32 elements per thread (4 warps) the backward takes up to 162
# registers, and ptxas spills in some launches.
REDUCE = _configs(
    [*_ROW_CHANNEL_TILES, {"BLOCK_R": 256, "BLOCK_C": 8}],
    _ROW_CHANNEL_INTERPRETER,
    [8, 8, 8, 8, 8],
)

ELEMENTWISE = _configs(
    [{"BLOCK": 1024}, {"BLOCK": 2048}, {"BLOCK": 4096}],
    {"BLOCK": 1 << 16},
    [4, 8, 8],
)


# Convolution tiles, (BLOCK_M, BLOCK_N, BLOCK_K, stages, warps). Every one
# keeps its accumulator within ACC_REGS registers per thread: the operand
# gathers' addresses and masks and the epilogue's tiles need the rest (the
# Triton gate, .ci/triton_gate.py, checks every kept config for sm_90).
#
# Tensor-core dots (bf16 / fp16, TF32): tiles for H100 / A100 (large C_out,
# deep K), narrower ones for the 64-channel layers and the grouped (ResNeXt)
# convolutions with few channels per group. 128 x 256 tiles and 128 x 128
# tiles on 4 warps (128 accumulator registers per thread) spill.
MMA_SHAPES = [
    (128, 128, 64, 3, 8),
    (128, 64, 64, 4, 4),
    (64, 128, 64, 4, 4),
    (64, 64, 64, 4, 4),
    (128, 64, 32, 4, 4),
    (64, 32, 32, 4, 4),
    (64, 16, 16, 2, 2),
]
# FMA dots (IEEE fp32, fp64; no tensor cores): Triton's FMA lowering holds a
# thread's whole [rows, BLOCK_K] and [BLOCK_K, cols] operand fragments in
# registers next to the accumulator, so BLOCK_K is 8: at 16 or more they
# spill. The longer K loop costs little where the FMAs bound the time.
FMA_SHAPES = [
    (128, 128, 8, 3, 8),
    (64, 64, 8, 3, 4),
    (64, 16, 8, 3, 2),
]


def _conv_shape(config: triton.Config) -> tuple[int, int, int, int, int]:
    m, n, k = (config.kwargs[key] for key in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
    return m, n, k, config.num_stages, config.num_warps


def _conv_configs() -> list[triton.Config]:
    if triton_interpreting():
        return [triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=1)]
    return [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_stages=s, num_warps=w)
        for m, n, k, s, w in MMA_SHAPES + FMA_SHAPES
    ]


# Shared memory one H100 block may use (A100: 163 KB; Triton then fails the
# launch of a larger config, and the autotuner skips it).
SMEM_LIMIT = 227 * 1024


def conv_smem_bytes(config: triton.Config, element_size: int) -> int:
    """Shared memory of the convolution's software pipeline: num_stages
    buffered [BLOCK_M, BLOCK_K] input and [BLOCK_K, BLOCK_N] weight tiles.

    Matches what Triton allocates for sm_90 (the gate's compiled sizes:
    M=N=128, K=64, 4 stages in fp32 take 262144 B)."""
    m, n, k = (config.kwargs[key] for key in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
    return config.num_stages * (m + n) * k * element_size


# Registers per thread a dot's accumulator may take: past 64, with the rest
# of the kernel's state beside it, the kernel spills (fp64 FMA tiles, whose
# accumulator takes two registers per value).
ACC_REGS = 64


def acc_regs(config: triton.Config, element_size: int) -> int:
    """32-bit registers per thread holding the accumulator (fp32, or fp64
    for fp64 inputs)."""
    m, n = config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"]
    return m * n * max(element_size // 4, 1) // (32 * config.num_warps)


# Bytes per thread of one stage's [BLOCK_M, BLOCK_K] input gather, whose
# addresses and padding masks a thread holds for every stage in flight. The
# bf16 / fp16 tiles take at most 128 B; an fp32 128 x 64 tile on 4 warps
# (256 B) spills under TF32, while its 64 x 128 twin (a 128 B gather and a
# 256 B weight tile) does not.
GATHER_BYTES = 128


def gather_bytes(config: triton.Config, element_size: int) -> int:
    """Bytes per thread of one pipeline stage's input tile."""
    m, k = config.kwargs["BLOCK_M"], config.kwargs["BLOCK_K"]
    return m * k * element_size // (32 * config.num_warps)


def _prune_conv(configs, named_args, **kwargs):
    """Keeps the tiles made for the dot this launch runs (MMA_SHAPES on
    tensor cores, FMA_SHAPES for IEEE fp32 and fp64), less the tiles far
    wider than the problem (a group with 8 output channels gains nothing
    from BLOCK_N = 128, nor a stem with 3 input channels from BLOCK_K = 64),
    tiles whose pipeline cannot fit in shared memory in this dtype, and
    tiles whose accumulator or input gather would not fit in registers."""
    c_out, c_in = named_args["C_out_g"], named_args["C_in_g"]
    size = named_args["x_ptr"].element_size()
    fma = size == 8 or (size == 4 and kwargs.get("DOT_PRECISION") == "ieee")
    shapes = FMA_SHAPES if fma else MMA_SHAPES
    kept = [
        c
        for c in configs
        if _conv_shape(c) in shapes
        and c.kwargs["BLOCK_N"] <= max(16, triton.next_power_of_2(c_out))
        and c.kwargs["BLOCK_K"] <= max(16, triton.next_power_of_2(c_in))
        and conv_smem_bytes(c, size) <= SMEM_LIMIT
        and acc_regs(c, size) <= ACC_REGS
        and gather_bytes(c, size) <= GATHER_BYTES
    ]
    # The interpreter's single config belongs to neither set.
    return kept or configs[-1:]


CONV = _conv_configs()
CONV_PRUNE = {"early_config_prune": _prune_conv}
# Rows per block of the training epilogue's partial statistics: the smallest
# BLOCK_M of CONV, which every config's BLOCK_M is a multiple of.
CONV_STATS_ROWS = min(c.kwargs["BLOCK_M"] for c in CONV)
