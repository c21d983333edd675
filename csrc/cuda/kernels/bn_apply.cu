// Normalize + affine [+ residual] [+ ReLU]:
//   out = act(((x - mean_hi) - mean_lo) * scale + shift [+ residual]).
//
// Passes over memory: read x [+ residual], write out: 2 passes (3 with a
// residual). With bn_stats (one read of x) a training forward is 3 passes (4
// with a residual); eager BN + [add +] ReLU takes 5 (8).
//
// 16-byte accesses when every operand allows them (aligned base, channel or
// line counts and strides multiples of the group), else one element per
// access. Grid-stride loops over one wave of resident blocks.
#include <cstdint>

#include "device_common.cuh"
#include "launch.h"

namespace resnet_fast::cuda {
namespace {

template <typename A, bool kResidual, bool kRelu>
__device__ __forceinline__ A apply_one(A x, A r, A mean_hi, A mean_lo, A scale, A shift) {
  A pre = pre_activation(centered(x, mean_hi, mean_lo), scale, shift);
  if constexpr (kResidual) pre += r;
  if constexpr (kRelu) pre = relu(pre);
  return pre;
}

// Rows walk (channels_last): threadIdx.x picks V channels of tile
// blockIdx.y (its coefficients stay in registers); threadIdx.y and
// blockIdx.x stride over the rows.
template <typename T, int V, bool kResidual, bool kRelu>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    bn_apply_rows_kernel(const T* __restrict__ x,  // [N, C, H, W] channels_last
                         RowIndex ix,
                         const T* __restrict__ res,  // [N, C, H, W] or nullptr
                         RowIndex ir,
                         const acc_t<T>* __restrict__ coefs,  // [4][C]
                         T* __restrict__ out,                 // [N, C, H, W]
                         RowIndex io, int64_t rows, int64_t C) {
  using A = acc_t<T>;
  const int64_t c0 = (static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x) * V;
  if (c0 >= C) return;  // no barrier in this kernel
  A mh[V], ml[V], sc[V], sh[V];
#pragma unroll
  for (int i = 0; i < V; ++i) {
    mh[i] = coefs[0 * C + c0 + i], ml[i] = coefs[1 * C + c0 + i];
    sc[i] = coefs[2 * C + c0 + i], sh[i] = coefs[3 * C + c0 + i];
  }
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.y;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; r < rows;
       r += step) {
    A v[V], rv[V], y[V];
    load_acc<T, V>(x + ix(r) + c0, v);
    if constexpr (kResidual) load_acc<T, V>(res + ir(r) + c0, rv);
#pragma unroll
    for (int i = 0; i < V; ++i)
      y[i] = apply_one<A, kResidual, kRelu>(v[i], kResidual ? rv[i] : A(0), mh[i], ml[i], sc[i],
                                            sh[i]);
    store_acc<T, V>(out + io(r) + c0, y);
  }
}

// Planar walk (NCHW): threadIdx.x along a line, threadIdx.y and blockIdx.x
// over the N * C * lines_per_nc lines.
template <typename T, int V, bool kResidual, bool kRelu>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    bn_apply_planar_kernel(const T* __restrict__ x,  // [N, C, H, W], stride_w == 1
                           Strides sx,
                           const T* __restrict__ res,  // [N, C, H, W] or nullptr
                           Strides sr,
                           const acc_t<T>* __restrict__ coefs,  // [4][C]
                           T* __restrict__ out,                 // [N, C, H, W]
                           Strides so, PlanarShape shape, int64_t lines, int64_t C) {
  using A = acc_t<T>;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.y;
  for (int64_t l = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; l < lines;
       l += step) {
    const int64_t nc = div32(l, shape.lines_per_nc), h = l - nc * shape.lines_per_nc;
    const int64_t n = div32(nc, C), c = nc - n * C;
    const A mh = coefs[c], ml = coefs[C + c], sc = coefs[2 * C + c], sh = coefs[3 * C + c];
    const T* xl = x + n * sx.n + c * sx.c + h * sx.h;
    const T* rl = kResidual ? res + n * sr.n + c * sr.c + h * sr.h : nullptr;
    T* ol = out + n * so.n + c * so.c + h * so.h;
    for (int64_t j = static_cast<int64_t>(threadIdx.x) * V; j < shape.line_len;
         j += static_cast<int64_t>(blockDim.x) * V) {
      A v[V], rv[V], y[V];
      load_acc<T, V>(xl + j, v);
      if constexpr (kResidual) load_acc<T, V>(rl + j, rv);
#pragma unroll
      for (int i = 0; i < V; ++i)
        y[i] = apply_one<A, kResidual, kRelu>(v[i], kResidual ? rv[i] : A(0), mh, ml, sc, sh);
      store_acc<T, V>(ol + j, y);
    }
  }
}

template <typename T, int V, bool kResidual, bool kRelu>
cudaError_t launch(const ApplyParams& p, cudaStream_t stream) {
  const Geometry& g = p.g;
  const T* x = static_cast<const T*>(p.x);
  const T* r = static_cast<const T*>(p.residual);
  const auto* coefs = static_cast<const acc_t<T>*>(p.coefs);
  T* out = static_cast<T*>(p.out);
  if (g.layout == Layout::kRows) {
    const RowsShape rs = rows_shape(g.C, V);
    if (rs.tiles > kMaxGridY) return cudaErrorInvalidConfiguration;
    const auto kernel = bn_apply_rows_kernel<T, V, kResidual, kRelu>;
    const int64_t rows = g.N * g.H * g.W;
    if (!rows_indexable(row_index(g, p.sx), rows) || !rows_indexable(row_index(g, p.so), rows) ||
        (kResidual && !rows_indexable(row_index(g, p.sr), rows)))
      return cudaErrorInvalidValue;
    const int64_t resident = resident_blocks(kernel, static_cast<int>(rs.bx * rs.by));
    const int64_t splits = clamp64(ceil_div(resident, rs.tiles), 1, ceil_div(rows, rs.by));
    const dim3 grid(static_cast<unsigned>(splits), rs.tiles), block(rs.bx, rs.by);
    RESNET_FAST_LAUNCH(grid, block, stream, kernel)(x, row_index(g, p.sx), r, row_index(g, p.sr),
                                                    coefs, out, row_index(g, p.so), rows, g.C);
  } else {
    const bool dense = dense_hw(g, p.sx) && dense_hw(g, p.so) && (!kResidual || dense_hw(g, p.sr));
    const PlanarShape shape = dense ? PlanarShape{1, g.H * g.W} : PlanarShape{g.H, g.W};
    const auto kernel = bn_apply_planar_kernel<T, V, kResidual, kRelu>;
    const dim3 block = planar_block(shape.line_len, V);
    const int64_t lines = g.N * g.C * shape.lines_per_nc;
    if (lines >= kFits32) return cudaErrorInvalidValue;
    const int64_t blocks = clamp64(resident_blocks(kernel, kThreads), 1, ceil_div(lines, block.y));
    RESNET_FAST_LAUNCH(static_cast<unsigned>(blocks), block, stream, kernel)(
        x, p.sx, r, p.sr, coefs, out, p.so, shape, lines, g.C);
  }
  return cudaGetLastError();
}

template <typename T, bool kResidual, bool kRelu>
cudaError_t launch_vec_or_not(const ApplyParams& p, cudaStream_t stream) {
  constexpr int V = kVec<T>;
  const Geometry& g = p.g;
  const int64_t e = sizeof(T);
  bool vec;
  if (g.layout == Layout::kRows) {
    vec = rows_vectorizable(g, p.x, p.sx, e, V) && rows_vectorizable(g, p.out, p.so, e, V) &&
          (!kResidual || rows_vectorizable(g, p.residual, p.sr, e, V));
  } else {
    const bool dense = dense_hw(g, p.sx) && dense_hw(g, p.so) && (!kResidual || dense_hw(g, p.sr));
    const PlanarShape shape = dense ? PlanarShape{1, g.H * g.W} : PlanarShape{g.H, g.W};
    vec = planar_vectorizable(g, shape, p.x, p.sx, e, V) &&
          planar_vectorizable(g, shape, p.out, p.so, e, V) &&
          (!kResidual || planar_vectorizable(g, shape, p.residual, p.sr, e, V));
  }
  return vec ? launch<T, V, kResidual, kRelu>(p, stream) : launch<T, 1, kResidual, kRelu>(p, stream);
}

template <typename T>
struct Apply {
  static cudaError_t run(const ApplyParams& p, cudaStream_t stream) {
    return with_flags(p.residual != nullptr, p.relu, [&](auto res, auto relu) {
      return launch_vec_or_not<T, decltype(res)::value, decltype(relu)::value>(p, stream);
    });
  }
};

}  // namespace

cudaError_t launch_bn_apply(const ApplyParams& p, cudaStream_t stream) {
  if (p.g.N * p.g.C * p.g.H * p.g.W == 0) return cudaSuccess;
  return by_dtype<Apply>(p.g.dtype, p, stream);
}

}  // namespace resnet_fast::cuda
