// Per-block batch statistics of x (training forward).
//
// Passes over memory: one read of x. Each block writes one partial result
// (count, mean, M2) per channel of its tile, a few KB next to the MBs it
// reads; bn_finalize.cu merges them.
//
// Stable for large means: each block centres its values on a shift, the
// value of its first row (planar: first element) in each channel, so that the
// fp32 shifted sums stay small (inputs with mean 1e4 and std 1 keep fp32
// precision). Every thread flushes its fp32 sums into fp64 every
// kFlushEvery accesses, and the block's partial is formed in fp64.
//
// Launch shape: one wave of resident blocks (grid-stride loops), at least
// kMinRowsPerThread rows per thread so that the partials stay small.
#include "device_common.cuh"
#include "launch.h"

#include <cstdint>

namespace resnet_fast::cuda {
namespace {

constexpr int kFlushEvery = 64;
constexpr int64_t kMinRowsPerThread = 16;  // fewer partials: more rows per block
constexpr int64_t kMaxSplits = 1024;

// Rows walk (channels_last). Block (bx, by): threadIdx.x picks V channels of
// tile blockIdx.y, threadIdx.y and blockIdx.x stride over the rows.
template <typename T, int V>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    bn_stats_rows_kernel(const T* __restrict__ x,  // [N, C, H, W] channels_last
                         RowIndex ix, int64_t rows, int64_t C,
                         double* __restrict__ partials,  // [3][splits][C]
                         int splits) {
  using A = acc_t<T>;
  __shared__ double acc1[kThreads * V], acc2[kThreads * V];
  __shared__ double shift_of[32 * V];
  __shared__ unsigned long long block_rows;
  const int64_t c0 = (static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x) * V;
  const bool active = c0 < C;  // V > 1 only when C % V == 0: the whole group is valid
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.y;  // < rows (the plan)
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.y;

  zero_lanes<V>(acc1);
  zero_lanes<V>(acc2);
  if (threadIdx.x == 0 && threadIdx.y == 0) block_rows = 0;
  A shift[V], s1[V], s2[V];
#pragma unroll
  for (int i = 0; i < V; ++i) shift[i] = s1[i] = s2[i] = A(0);
  unsigned long long my_rows = 0;
  if (active) {
    load_acc<T, V>(x + ix(first) + c0, shift);
    if (threadIdx.y == 0) {
#pragma unroll
      for (int i = 0; i < V; ++i) shift_of[threadIdx.x * V + i] = static_cast<double>(shift[i]);
    }
    int pending = 0;
    for (int64_t r = first + threadIdx.y; r < rows; r += step) {
      A v[V];
      load_acc<T, V>(x + ix(r) + c0, v);
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const A d = v[i] - shift[i];
        s1[i] += d;
        s2[i] = fma(d, d, s2[i]);
      }
      ++my_rows;
      if (++pending == kFlushEvery) {
        flush_lanes<A, V>(acc1, s1);
        flush_lanes<A, V>(acc2, s2);
        pending = 0;
      }
    }
  }
  flush_lanes<A, V>(acc1, s1);
  flush_lanes<A, V>(acc2, s2);
  __syncthreads();  // block_rows = 0 is visible
  if (threadIdx.x == 0) atomicAdd(&block_rows, my_rows);
  __syncthreads();

  const double S1 = sum_columns<V>(acc1), S2 = sum_columns<V>(acc2);
  const unsigned col = block_tid();
  const int64_t c = static_cast<int64_t>(blockIdx.y) * blockDim.x * V + col;
  if (col < blockDim.x * V && c < C) {
    const double n = static_cast<double>(block_rows);  // >= 1: row `first` is the block's
    const double mean_rel = S1 / n;
    const int64_t s = splits;
    partials[(0 * s + blockIdx.x) * C + c] = n;
    partials[(1 * s + blockIdx.x) * C + c] = shift_of[col] + mean_rel;
    partials[(2 * s + blockIdx.x) * C + c] = fmax(S2 - S1 * mean_rel, 0.0);
  }
}

// Planar walk (NCHW). Block (c, split): threadIdx.x along a line,
// threadIdx.y and blockIdx.y over the N * lines_per_nc lines of channel c.
template <typename T, int V>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    bn_stats_planar_kernel(const T* __restrict__ x,  // [N, C, H, W], stride_w == 1
                           Strides sx, PlanarShape shape, int64_t lines, int64_t C,
                           double* __restrict__ partials,  // [3][splits][C]
                           int splits) {
  using A = acc_t<T>;
  __shared__ double red[32];
  __shared__ unsigned long long block_lines;
  const int64_t c = blockIdx.x;
  const int64_t first = static_cast<int64_t>(blockIdx.y) * blockDim.y;  // < lines (the plan)
  const int64_t step = static_cast<int64_t>(gridDim.y) * blockDim.y;
  const A shift = to_acc(x[line_offset(sx, shape.lines_per_nc, first, c)]);

  A s1[V], s2[V];
#pragma unroll
  for (int i = 0; i < V; ++i) s1[i] = s2[i] = A(0);
  double t1 = 0, t2 = 0;
  unsigned long long my_lines = 0;
  int pending = 0;
  for (int64_t l = first + threadIdx.y; l < lines; l += step) {
    const T* line = x + line_offset(sx, shape.lines_per_nc, l, c);
#pragma unroll 2
    for (int64_t j = static_cast<int64_t>(threadIdx.x) * V; j < shape.line_len;
         j += static_cast<int64_t>(blockDim.x) * V) {
      A v[V];
      load_acc<T, V>(line + j, v);
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const A d = v[i] - shift;
        s1[i] += d;
        s2[i] = fma(d, d, s2[i]);
      }
      if (++pending == kFlushEvery) {
#pragma unroll
        for (int i = 0; i < V; ++i) t1 += s1[i], t2 += s2[i], s1[i] = s2[i] = A(0);
        pending = 0;
      }
    }
    ++my_lines;
  }
#pragma unroll
  for (int i = 0; i < V; ++i) t1 += s1[i], t2 += s2[i];

  const bool first_thread = block_tid() == 0;
  if (first_thread) block_lines = 0;
  __syncthreads();
  if (threadIdx.x == 0) atomicAdd(&block_lines, my_lines);
  const double S1 = block_sum(red, t1);  // synchronizes: block_lines is complete after
  const double S2 = block_sum(red, t2);
  if (first_thread) {
    const double n = static_cast<double>(block_lines) * static_cast<double>(shape.line_len);
    const double mean_rel = S1 / n;
    const int64_t s = splits;
    partials[(0 * s + blockIdx.y) * C + c] = n;
    partials[(1 * s + blockIdx.y) * C + c] = static_cast<double>(shift) + mean_rel;
    partials[(2 * s + blockIdx.y) * C + c] = fmax(S2 - S1 * mean_rel, 0.0);
  }
}

PlanarShape planar_shape_of(const StatsParams& p) {
  return dense_hw(p.g, p.sx) ? PlanarShape{1, p.g.H * p.g.W} : PlanarShape{p.g.H, p.g.W};
}

template <typename T>
struct Plan {
  static ReductionPlan run(const StatsParams& p) {
    constexpr int V = kVec<T>;
    const Geometry& g = p.g;
    ReductionPlan plan;
    if (g.layout == Layout::kRows) {
      plan.vectorized = rows_vectorizable(g, p.x, p.sx, sizeof(T), V);
      const RowsShape rs = rows_shape(g.C, plan.vectorized ? V : 1);
      const int threads = static_cast<int>(rs.bx * rs.by);
      const int64_t resident = plan.vectorized
                                   ? resident_blocks(bn_stats_rows_kernel<T, V>, threads)
                                   : resident_blocks(bn_stats_rows_kernel<T, 1>, threads);
      const int64_t rows = g.N * g.H * g.W;
      const int64_t most = ceil_div(rows, static_cast<int64_t>(rs.by) * kMinRowsPerThread);
      plan.splits = static_cast<int>(clamp64(ceil_div(resident, rs.tiles), 1,
                                             most < kMaxSplits ? most : kMaxSplits));
      plan.block_x = rs.bx, plan.block_y = rs.by;
      plan.grid_x = static_cast<unsigned>(plan.splits), plan.grid_y = rs.tiles;
    } else {
      const PlanarShape shape = planar_shape_of(p);
      plan.vectorized = planar_vectorizable(g, shape, p.x, p.sx, sizeof(T), V);
      const dim3 block = planar_block(shape.line_len, plan.vectorized ? V : 1);
      const int64_t resident = plan.vectorized
                                   ? resident_blocks(bn_stats_planar_kernel<T, V>, kThreads)
                                   : resident_blocks(bn_stats_planar_kernel<T, 1>, kThreads);
      const int64_t lines = g.N * shape.lines_per_nc;
      const int64_t most = ceil_div(lines, block.y);
      plan.splits = static_cast<int>(clamp64(ceil_div(resident, g.C), 1,
                                             most < kMaxSplits ? most : kMaxSplits));
      plan.block_x = block.x, plan.block_y = block.y;
      plan.grid_x = static_cast<unsigned>(g.C), plan.grid_y = static_cast<unsigned>(plan.splits);
    }
    return plan;
  }
};

template <typename T>
struct Launch {
  static cudaError_t run(const StatsParams& p, const ReductionPlan& plan, cudaStream_t stream) {
    constexpr int V = kVec<T>;
    const Geometry& g = p.g;
    const T* x = static_cast<const T*>(p.x);
    const dim3 block(plan.block_x, plan.block_y), grid(plan.grid_x, plan.grid_y);
    if (g.layout == Layout::kRows) {
      if (plan.grid_y > kMaxGridY) return cudaErrorInvalidConfiguration;
      const RowIndex ix = row_index(g, p.sx);
      const int64_t rows = g.N * g.H * g.W;
      if (!rows_indexable(ix, rows)) return cudaErrorInvalidValue;
      if (plan.vectorized) {
        RESNET_FAST_LAUNCH(grid, block, stream, bn_stats_rows_kernel<T, V>)(
            x, ix, rows, g.C, p.partials, plan.splits);
      } else {
        RESNET_FAST_LAUNCH(grid, block, stream, bn_stats_rows_kernel<T, 1>)(
            x, ix, rows, g.C, p.partials, plan.splits);
      }
    } else {
      if (g.C > INT32_MAX) return cudaErrorInvalidConfiguration;
      const PlanarShape shape = planar_shape_of(p);
      const int64_t lines = g.N * shape.lines_per_nc;
      if (lines >= kFits32) return cudaErrorInvalidValue;
      if (plan.vectorized) {
        RESNET_FAST_LAUNCH(grid, block, stream, bn_stats_planar_kernel<T, V>)(
            x, p.sx, shape, lines, g.C, p.partials, plan.splits);
      } else {
        RESNET_FAST_LAUNCH(grid, block, stream, bn_stats_planar_kernel<T, 1>)(
            x, p.sx, shape, lines, g.C, p.partials, plan.splits);
      }
    }
    return cudaGetLastError();
  }
};

}  // namespace

ReductionPlan plan_bn_stats(const StatsParams& p) {
  if (p.g.C == 0 || p.g.N * p.g.H * p.g.W == 0) return {};
  return by_dtype<Plan>(p.g.dtype, p);
}

cudaError_t launch_bn_stats(const StatsParams& p, const ReductionPlan& plan, cudaStream_t stream) {
  if (plan.splits == 0) return cudaSuccess;
  return by_dtype<Launch>(p.g.dtype, p, plan, stream);
}

}  // namespace resnet_fast::cuda
