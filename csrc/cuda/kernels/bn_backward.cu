// Backward of the fused BN ops: the reductions (+ grad_residual), then the
// grad-input.
//
// Passes over memory:
//   reduce:  read dy, x [+ residual]; write grad_residual when there is a
//            residual (it is g = dy * mask, which the grad-input then reads
//            instead of dy and the residual).
//   apply:   read dy (or grad_residual) and x; write dx.
// = 5 passes (7 with a residual); eager takes 8. The ReLU mask is recomputed
// from x (and the residual) with the forward's own arithmetic, never stored.
//
// The reduce is split like bn_stats (one wave of blocks, partial sums per
// block and channel in fp64, merged by bn_finalize.cu).
#include <cstdint>
#include <initializer_list>

#include "device_common.cuh"
#include "launch.h"

namespace resnet_fast::cuda {
namespace {

constexpr int kFlushEvery = 64;
constexpr int64_t kMinRowsPerThread = 16;
constexpr int64_t kMaxSplits = 1024;

// g = dy * [pre > 0] with pre the forward's pre-activation.
template <typename A, bool kResidual, bool kRelu>
__device__ __forceinline__ A masked_grad(A dy, A xc, A r, A scale, A shift) {
  if constexpr (!kRelu) {
    return dy;
  } else {
    A pre = pre_activation(xc, scale, shift);
    if constexpr (kResidual) pre += r;
    return pre > A(0) ? dy : A(0);
  }
}

template <typename A, int V>
__device__ __forceinline__ void saved_lanes(const SavedStats& s, int64_t c0, A (&mh)[V], A (&ml)[V],
                                            A (&sc)[V], A (&sh)[V]) {
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const int64_t c = c0 + i;
    const ChannelAffine<A> k = saved_affine<A, DeviceChannelIo>(s, c);
    mh[i] = k.mean_hi, ml[i] = k.mean_lo, sc[i] = k.scale, sh[i] = k.shift;
  }
}

// Rows walk (channels_last), shaped like bn_stats_rows_kernel.
template <typename T, int V, bool kResidual, bool kRelu>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    bn_backward_reduce_rows_kernel(const T* __restrict__ dy,  // [N, C, H, W] channels_last
                                   RowIndex idy,
                                   const T* __restrict__ x,  // [N, C, H, W]
                                   RowIndex ix,
                                   const T* __restrict__ res,  // [N, C, H, W] or nullptr
                                   RowIndex ir, SavedStats saved,
                                   double* __restrict__ partials,  // [2][splits][C]
                                   int splits,
                                   T* __restrict__ grad_res,  // [N, C, H, W] or nullptr
                                   RowIndex igr, int64_t rows, int64_t C) {
  using A = acc_t<T>;
  __shared__ double acc_g[kThreads * V], acc_gx[kThreads * V];
  const int64_t c0 = (static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x) * V;
  const bool active = c0 < C;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.y;

  zero_lanes<V>(acc_g);
  zero_lanes<V>(acc_gx);
  A sg[V], sgx[V];
#pragma unroll
  for (int i = 0; i < V; ++i) sg[i] = sgx[i] = A(0);
  if (active) {
    A mh[V], ml[V], sc[V], sh[V];
    saved_lanes<A, V>(saved, c0, mh, ml, sc, sh);
    int pending = 0;
    for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; r < rows;
         r += step) {
      A d[V], v[V], rv[V], g[V];
      load_acc<T, V>(dy + idy(r) + c0, d);
      load_acc<T, V>(x + ix(r) + c0, v);
      if constexpr (kResidual) load_acc<T, V>(res + ir(r) + c0, rv);
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const A xc = centered(v[i], mh[i], ml[i]);
        g[i] = masked_grad<A, kResidual, kRelu>(d[i], xc, kResidual ? rv[i] : A(0), sc[i], sh[i]);
        sg[i] += g[i];
        sgx[i] = fma(g[i], xc, sgx[i]);
      }
      if constexpr (kResidual) store_acc<T, V>(grad_res + igr(r) + c0, g);
      if (++pending == kFlushEvery) {
        flush_lanes<A, V>(acc_g, sg);
        flush_lanes<A, V>(acc_gx, sgx);
        pending = 0;
      }
    }
  }
  flush_lanes<A, V>(acc_g, sg);
  flush_lanes<A, V>(acc_gx, sgx);
  __syncthreads();

  const double G = sum_columns<V>(acc_g), GX = sum_columns<V>(acc_gx);
  const unsigned col = block_tid();
  const int64_t c = static_cast<int64_t>(blockIdx.y) * blockDim.x * V + col;
  if (col < blockDim.x * V && c < C) {
    const int64_t s = splits;
    partials[(0 * s + blockIdx.x) * C + c] = G;
    partials[(1 * s + blockIdx.x) * C + c] = GX;
  }
}

// Planar walk (NCHW), shaped like bn_stats_planar_kernel: block (c, split).
template <typename T, int V, bool kResidual, bool kRelu>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    bn_backward_reduce_planar_kernel(const T* __restrict__ dy,  // [N, C, H, W], stride_w == 1
                                     Strides sdy,
                                     const T* __restrict__ x,  // [N, C, H, W]
                                     Strides sx,
                                     const T* __restrict__ res,  // [N, C, H, W] or nullptr
                                     Strides sr, SavedStats saved,
                                     double* __restrict__ partials,  // [2][splits][C]
                                     int splits,
                                     T* __restrict__ grad_res,  // [N, C, H, W] or nullptr
                                     Strides sgr, PlanarShape shape, int64_t lines, int64_t C) {
  using A = acc_t<T>;
  __shared__ double red[32];
  const int64_t c = blockIdx.x;
  const int64_t step = static_cast<int64_t>(gridDim.y) * blockDim.y;
  A mh[1], ml[1], sc[1], sh[1];
  saved_lanes<A, 1>(saved, c, mh, ml, sc, sh);

  A sg[V], sgx[V];
#pragma unroll
  for (int i = 0; i < V; ++i) sg[i] = sgx[i] = A(0);
  double tg = 0, tgx = 0;
  int pending = 0;
  for (int64_t l = static_cast<int64_t>(blockIdx.y) * blockDim.y + threadIdx.y; l < lines;
       l += step) {
    const T* dl = dy + line_offset(sdy, shape.lines_per_nc, l, c);
    const T* xl = x + line_offset(sx, shape.lines_per_nc, l, c);
    const T* rl = kResidual ? res + line_offset(sr, shape.lines_per_nc, l, c) : nullptr;
    T* gl = kResidual ? grad_res + line_offset(sgr, shape.lines_per_nc, l, c) : nullptr;
    for (int64_t j = static_cast<int64_t>(threadIdx.x) * V; j < shape.line_len;
         j += static_cast<int64_t>(blockDim.x) * V) {
      A d[V], v[V], rv[V], g[V];
      load_acc<T, V>(dl + j, d);
      load_acc<T, V>(xl + j, v);
      if constexpr (kResidual) load_acc<T, V>(rl + j, rv);
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const A xc = centered(v[i], mh[0], ml[0]);
        g[i] = masked_grad<A, kResidual, kRelu>(d[i], xc, kResidual ? rv[i] : A(0), sc[0], sh[0]);
        sg[i] += g[i];
        sgx[i] = fma(g[i], xc, sgx[i]);
      }
      if constexpr (kResidual) store_acc<T, V>(gl + j, g);
      if (++pending == kFlushEvery) {
#pragma unroll
        for (int i = 0; i < V; ++i) tg += sg[i], tgx += sgx[i], sg[i] = sgx[i] = A(0);
        pending = 0;
      }
    }
  }
#pragma unroll
  for (int i = 0; i < V; ++i) tg += sg[i], tgx += sgx[i];
  const double G = block_sum(red, tg);
  const double GX = block_sum(red, tgx);
  if (block_tid() == 0) {
    const int64_t s = splits;
    partials[(0 * s + blockIdx.y) * C + c] = G;
    partials[(1 * s + blockIdx.y) * C + c] = GX;
  }
}

// dx = a * g + b * (x - mean) + d, g = gsrc [* (pre > 0)].
template <typename A, bool kMask>
__device__ __forceinline__ A grad_input(A gsrc, A xv, const A (&k)[7]) {
  const A xc = centered(xv, k[0], k[1]);
  const A g = masked_grad<A, false, kMask>(gsrc, xc, A(0), k[2], k[3]);
  return fma(g, k[4], fma(xc, k[5], k[6]));
}

template <typename T, int V, bool kMask>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    bn_backward_apply_rows_kernel(const T* __restrict__ gsrc,  // [N, C, H, W] channels_last
                                  RowIndex ig,
                                  const T* __restrict__ x,  // [N, C, H, W]
                                  RowIndex ix,
                                  const acc_t<T>* __restrict__ coefs,  // [7][C]
                                  T* __restrict__ dx,                  // [N, C, H, W]
                                  RowIndex idx, int64_t rows, int64_t C) {
  using A = acc_t<T>;
  const int64_t c0 = (static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x) * V;
  if (c0 >= C) return;  // no barrier in this kernel
  A k[V][7];
#pragma unroll
  for (int i = 0; i < V; ++i) {
#pragma unroll
    for (int j = 0; j < 7; ++j) k[i][j] = coefs[j * C + c0 + i];
  }
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.y;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; r < rows;
       r += step) {
    A gv[V], v[V], out[V];
    load_acc<T, V>(gsrc + ig(r) + c0, gv);
    load_acc<T, V>(x + ix(r) + c0, v);
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = grad_input<A, kMask>(gv[i], v[i], k[i]);
    store_acc<T, V>(dx + idx(r) + c0, out);
  }
}

template <typename T, int V, bool kMask>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    bn_backward_apply_planar_kernel(const T* __restrict__ gsrc,  // [N, C, H, W], stride_w == 1
                                    Strides sg,
                                    const T* __restrict__ x,  // [N, C, H, W]
                                    Strides sx,
                                    const acc_t<T>* __restrict__ coefs,  // [7][C]
                                    T* __restrict__ dx,                  // [N, C, H, W]
                                    Strides sdx, PlanarShape shape, int64_t lines, int64_t C) {
  using A = acc_t<T>;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.y;
  for (int64_t l = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; l < lines;
       l += step) {
    const int64_t nc = div32(l, shape.lines_per_nc), h = l - nc * shape.lines_per_nc;
    const int64_t n = div32(nc, C), c = nc - n * C;
    A k[7];
#pragma unroll
    for (int j = 0; j < 7; ++j) k[j] = coefs[j * C + c];
    const T* gl = gsrc + n * sg.n + c * sg.c + h * sg.h;
    const T* xl = x + n * sx.n + c * sx.c + h * sx.h;
    T* dl = dx + n * sdx.n + c * sdx.c + h * sdx.h;
    for (int64_t j = static_cast<int64_t>(threadIdx.x) * V; j < shape.line_len;
         j += static_cast<int64_t>(blockDim.x) * V) {
      A gv[V], v[V], out[V];
      load_acc<T, V>(gl + j, gv);
      load_acc<T, V>(xl + j, v);
#pragma unroll
      for (int i = 0; i < V; ++i) out[i] = grad_input<A, kMask>(gv[i], v[i], k);
      store_acc<T, V>(dl + j, out);
    }
  }
}

// ---------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------

PlanarShape reduce_shape(const BackwardReduceParams& p) {
  const Geometry& g = p.g;
  const bool res = p.residual != nullptr;
  const bool dense = dense_hw(g, p.sdy) && dense_hw(g, p.sx) &&
                     (!res || (dense_hw(g, p.sr) && dense_hw(g, p.sgr)));
  return dense ? PlanarShape{1, g.H * g.W} : PlanarShape{g.H, g.W};
}

bool reduce_vectorizable(const BackwardReduceParams& p, int64_t e, int V) {
  const Geometry& g = p.g;
  if (g.layout == Layout::kRows) {
    return rows_vectorizable(g, p.dy, p.sdy, e, V) && rows_vectorizable(g, p.x, p.sx, e, V) &&
           rows_vectorizable(g, p.residual, p.sr, e, V) &&
           rows_vectorizable(g, p.grad_residual, p.sgr, e, V);
  }
  const PlanarShape s = reduce_shape(p);
  return planar_vectorizable(g, s, p.dy, p.sdy, e, V) &&
         planar_vectorizable(g, s, p.x, p.sx, e, V) &&
         planar_vectorizable(g, s, p.residual, p.sr, e, V) &&
         planar_vectorizable(g, s, p.grad_residual, p.sgr, e, V);
}

template <typename T, int V, bool kResidual, bool kRelu>
struct ReduceKernels {
  static ReductionPlan plan(const BackwardReduceParams& p) {
    const Geometry& g = p.g;
    ReductionPlan plan;
    plan.vectorized = V > 1;
    if (g.layout == Layout::kRows) {
      const RowsShape rs = rows_shape(g.C, V);
      const int64_t resident = resident_blocks(bn_backward_reduce_rows_kernel<T, V, kResidual, kRelu>,
                                               static_cast<int>(rs.bx * rs.by));
      const int64_t n_rows = g.N * g.H * g.W;
      const int64_t most = ceil_div(n_rows, static_cast<int64_t>(rs.by) * kMinRowsPerThread);
      plan.splits = static_cast<int>(
          clamp64(ceil_div(resident, rs.tiles), 1, most < kMaxSplits ? most : kMaxSplits));
      plan.block_x = rs.bx, plan.block_y = rs.by;
      plan.grid_x = static_cast<unsigned>(plan.splits), plan.grid_y = rs.tiles;
    } else {
      const PlanarShape shape = reduce_shape(p);
      const dim3 block = planar_block(shape.line_len, V);
      const int64_t resident = resident_blocks(bn_backward_reduce_planar_kernel<T, V, kResidual, kRelu>, kThreads);
      const int64_t most = ceil_div(g.N * shape.lines_per_nc, block.y);
      plan.splits = static_cast<int>(
          clamp64(ceil_div(resident, g.C), 1, most < kMaxSplits ? most : kMaxSplits));
      plan.block_x = block.x, plan.block_y = block.y;
      plan.grid_x = static_cast<unsigned>(g.C), plan.grid_y = static_cast<unsigned>(plan.splits);
    }
    return plan;
  }

  static cudaError_t launch(const BackwardReduceParams& p, const ReductionPlan& plan,
                            cudaStream_t stream) {
    const Geometry& g = p.g;
    const dim3 block(plan.block_x, plan.block_y), grid(plan.grid_x, plan.grid_y);
    const T* dy = static_cast<const T*>(p.dy);
    const T* x = static_cast<const T*>(p.x);
    const T* r = static_cast<const T*>(p.residual);
    T* gr = static_cast<T*>(p.grad_residual);
    if (g.layout == Layout::kRows) {
      if (plan.grid_y > kMaxGridY) return cudaErrorInvalidConfiguration;
      const int64_t n_rows = g.N * g.H * g.W;
      for (const Strides* s : {&p.sdy, &p.sx, &p.sr, &p.sgr})
        if (!rows_indexable(row_index(g, *s), n_rows)) return cudaErrorInvalidValue;
      RESNET_FAST_LAUNCH(grid, block, stream,
                         bn_backward_reduce_rows_kernel<T, V, kResidual, kRelu>)(
          dy, row_index(g, p.sdy), x, row_index(g, p.sx), r, row_index(g, p.sr), p.saved,
          p.partials, plan.splits, gr, row_index(g, p.sgr), g.N * g.H * g.W, g.C);
    } else {
      if (g.C > INT32_MAX) return cudaErrorInvalidConfiguration;
      const PlanarShape shape = reduce_shape(p);
      if (g.N * shape.lines_per_nc >= kFits32) return cudaErrorInvalidValue;
      RESNET_FAST_LAUNCH(grid, block, stream,
                         bn_backward_reduce_planar_kernel<T, V, kResidual, kRelu>)(
          dy, p.sdy, x, p.sx, r, p.sr, p.saved, p.partials, plan.splits, gr, p.sgr, shape,
          g.N * shape.lines_per_nc, g.C);
    }
    return cudaGetLastError();
  }
};

template <typename T>
struct Reduce {
  template <bool kResidual, bool kRelu>
  static ReductionPlan plan_flags(const BackwardReduceParams& p) {
    constexpr int V = kVec<T>;
    return reduce_vectorizable(p, sizeof(T), V) ? ReduceKernels<T, V, kResidual, kRelu>::plan(p)
                                                 : ReduceKernels<T, 1, kResidual, kRelu>::plan(p);
  }
  template <bool kResidual, bool kRelu>
  static cudaError_t launch_flags(const BackwardReduceParams& p, const ReductionPlan& plan,
                                  cudaStream_t stream) {
    constexpr int V = kVec<T>;
    return plan.vectorized ? ReduceKernels<T, V, kResidual, kRelu>::launch(p, plan, stream)
                           : ReduceKernels<T, 1, kResidual, kRelu>::launch(p, plan, stream);
  }
  static ReductionPlan run(const BackwardReduceParams& p) {
    return with_flags(p.residual != nullptr, p.relu, [&](auto res, auto relu) {
      return plan_flags<decltype(res)::value, decltype(relu)::value>(p);
    });
  }
  static cudaError_t run(const BackwardReduceParams& p, const ReductionPlan& plan,
                         cudaStream_t stream) {
    return with_flags(p.residual != nullptr, p.relu, [&](auto res, auto relu) {
      return launch_flags<decltype(res)::value, decltype(relu)::value>(p, plan, stream);
    });
  }
};

template <typename T, int V, bool kMask>
cudaError_t launch_apply(const BackwardApplyParams& p, cudaStream_t stream) {
  const Geometry& g = p.g;
  const T* gs = static_cast<const T*>(p.gsrc);
  const T* x = static_cast<const T*>(p.x);
  const auto* coefs = static_cast<const acc_t<T>*>(p.coefs);
  T* dx = static_cast<T*>(p.dx);
  if (g.layout == Layout::kRows) {
    const RowsShape rs = rows_shape(g.C, V);
    if (rs.tiles > kMaxGridY) return cudaErrorInvalidConfiguration;
    const auto kernel = bn_backward_apply_rows_kernel<T, V, kMask>;
    const int64_t rows = g.N * g.H * g.W;
    for (const Strides* s : {&p.sg, &p.sx, &p.sdx})
      if (!rows_indexable(row_index(g, *s), rows)) return cudaErrorInvalidValue;
    const int64_t resident = resident_blocks(kernel, static_cast<int>(rs.bx * rs.by));
    const int64_t splits = clamp64(ceil_div(resident, rs.tiles), 1, ceil_div(rows, rs.by));
    const dim3 grid(static_cast<unsigned>(splits), rs.tiles), block(rs.bx, rs.by);
    RESNET_FAST_LAUNCH(grid, block, stream, kernel)(gs, row_index(g, p.sg), x, row_index(g, p.sx),
                                                    coefs, dx, row_index(g, p.sdx), rows, g.C);
  } else {
    const bool dense = dense_hw(g, p.sg) && dense_hw(g, p.sx) && dense_hw(g, p.sdx);
    const PlanarShape shape = dense ? PlanarShape{1, g.H * g.W} : PlanarShape{g.H, g.W};
    const auto kernel = bn_backward_apply_planar_kernel<T, V, kMask>;
    const dim3 block = planar_block(shape.line_len, V);
    const int64_t lines = g.N * g.C * shape.lines_per_nc;
    if (lines >= kFits32) return cudaErrorInvalidValue;
    const int64_t blocks = clamp64(resident_blocks(kernel, kThreads), 1, ceil_div(lines, block.y));
    RESNET_FAST_LAUNCH(static_cast<unsigned>(blocks), block, stream, kernel)(
        gs, p.sg, x, p.sx, coefs, dx, p.sdx, shape, lines, g.C);
  }
  return cudaGetLastError();
}

template <typename T>
struct Apply {
  template <bool kMask>
  static cudaError_t flags(const BackwardApplyParams& p, cudaStream_t stream) {
    constexpr int V = kVec<T>;
    const Geometry& g = p.g;
    const int64_t e = sizeof(T);
    bool vec;
    if (g.layout == Layout::kRows) {
      vec = rows_vectorizable(g, p.gsrc, p.sg, e, V) && rows_vectorizable(g, p.x, p.sx, e, V) &&
            rows_vectorizable(g, p.dx, p.sdx, e, V);
    } else {
      const bool dense = dense_hw(g, p.sg) && dense_hw(g, p.sx) && dense_hw(g, p.sdx);
      const PlanarShape s = dense ? PlanarShape{1, g.H * g.W} : PlanarShape{g.H, g.W};
      vec = planar_vectorizable(g, s, p.gsrc, p.sg, e, V) &&
            planar_vectorizable(g, s, p.x, p.sx, e, V) &&
            planar_vectorizable(g, s, p.dx, p.sdx, e, V);
    }
    return vec ? launch_apply<T, V, kMask>(p, stream) : launch_apply<T, 1, kMask>(p, stream);
  }
  static cudaError_t run(const BackwardApplyParams& p, cudaStream_t stream) {
    return p.mask_from_x ? flags<true>(p, stream) : flags<false>(p, stream);
  }
};

}  // namespace

ReductionPlan plan_bn_backward_reduce(const BackwardReduceParams& p) {
  if (p.g.C == 0 || p.g.N * p.g.H * p.g.W == 0) return {};
  return by_dtype<Reduce>(p.g.dtype, p);
}

cudaError_t launch_bn_backward_reduce(const BackwardReduceParams& p, const ReductionPlan& plan,
                                      cudaStream_t stream) {
  if (plan.splits == 0) return cudaSuccess;
  return by_dtype<Reduce>(p.g.dtype, p, plan, stream);
}

cudaError_t launch_bn_backward_apply(const BackwardApplyParams& p, cudaStream_t stream) {
  if (p.g.N * p.g.C * p.g.H * p.g.W == 0) return cudaSuccess;
  return by_dtype<Apply>(p.g.dtype, p, stream);
}

}  // namespace resnet_fast::cuda
