// Device helpers shared by the kernels: accumulation types and conversions,
// 16-byte packs, [C] vector access for the per-channel steps of
// common/channel_steps.h, operand indexing, block reductions, and the
// launch-shape arithmetic of the host launchers.
//
// torch compiles .cu files with __CUDA_NO_HALF_OPERATORS__,
// __CUDA_NO_HALF_CONVERSIONS__ and __CUDA_NO_BFLOAT16_CONVERSIONS__: every
// conversion below is an explicit intrinsic, and no arithmetic is done on
// __half / __nv_bfloat16 values.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "../../common/channel_steps.h"
#include "../../common/kernel_params.h"
#include "../../common/static_switch.h"
#include "launch_macro.h"  // RESNET_FAST_LAUNCH: the launchers' one launch syntax

namespace resnet_fast::cuda {

constexpr int kThreads = 256;  // threads per block of every streaming kernel
// Asked of ptxas with __launch_bounds__: at least 2 resident blocks, so at
// most 128 registers. Without it ptxas holds some kernels at 64 registers
// and spills to local memory, which the CI gate forbids.
constexpr int kMinBlocksPerSm = 2;

// ---------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------

template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_acc(acc_t<T> v) {
  if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(v);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(v);
  } else {
    return v;
  }
}

// Calls Fn<T>::run(args...) with T the C++ type of `dtype`.
template <template <typename> class Fn, typename... Args>
inline auto by_dtype(Dtype dtype, const Args&... args) {
  switch (dtype) {
    case Dtype::kDouble: return Fn<double>::run(args...);
    case Dtype::kHalf: return Fn<__half>::run(args...);
    case Dtype::kBFloat16: return Fn<__nv_bfloat16>::run(args...);
    case Dtype::kFloat: break;
  }
  return Fn<float>::run(args...);
}

// Elements per 16-byte access.
template <typename T>
constexpr int kVec = 16 / static_cast<int>(sizeof(T));

// V elements read or written with one access of V * sizeof(T) bytes (16 for
// the vectorized kernels; the caller guarantees the alignment).
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <typename T, int V>
__device__ __forceinline__ void load_acc(const T* p, acc_t<T> (&out)[V]) {
  const Pack<T, V> pack = *reinterpret_cast<const Pack<T, V>*>(p);
#pragma unroll
  for (int i = 0; i < V; ++i) out[i] = to_acc(pack.v[i]);
}

template <typename T, int V>
__device__ __forceinline__ void store_acc(T* p, const acc_t<T> (&in)[V]) {
  Pack<T, V> pack;
#pragma unroll
  for (int i = 0; i < V; ++i) pack.v[i] = from_acc<T>(in[i]);
  *reinterpret_cast<Pack<T, V>*>(p) = pack;
}

// [C] vectors of any dtype, values converted through double (the Io of
// common/channel_steps.h).
struct DeviceChannelIo {
  // Element i, converted to double.
  __device__ __forceinline__ static double load(const void* data, Dtype dtype, int64_t stride,
                                                int64_t i) {
    const int64_t k = i * stride;
    switch (dtype) {
      case Dtype::kDouble: return static_cast<const double*>(data)[k];
      case Dtype::kHalf: return __half2float(static_cast<const __half*>(data)[k]);
      case Dtype::kBFloat16: return __bfloat162float(static_cast<const __nv_bfloat16*>(data)[k]);
      case Dtype::kFloat: break;
    }
    return static_cast<const float*>(data)[k];
  }

  // Element i, rounded once from double.
  __device__ __forceinline__ static void store(void* data, Dtype dtype, int64_t stride, int64_t i,
                                               double v) {
    const int64_t k = i * stride;
    switch (dtype) {
      case Dtype::kDouble: static_cast<double*>(data)[k] = v; return;
      case Dtype::kHalf: static_cast<__half*>(data)[k] = __double2half(v); return;
      case Dtype::kBFloat16:
        static_cast<__nv_bfloat16*>(data)[k] = __double2bfloat16(v);
        return;
      case Dtype::kFloat: break;
    }
    static_cast<float*>(data)[k] = static_cast<float>(v);
  }
};

// ---------------------------------------------------------------------------
// Elementwise steps of the BN kernels
// ---------------------------------------------------------------------------

template <typename A>
__device__ __forceinline__ A centered(A x, A mean_hi, A mean_lo) {
  return (x - mean_hi) - mean_lo;
}

// The forward pre-activation before the residual; an explicit fma so that
// forward and backward round it the same way whatever the compiler contracts.
__device__ __forceinline__ float pre_activation(float centered, float scale, float shift) {
  return __fmaf_rn(centered, scale, shift);
}
__device__ __forceinline__ double pre_activation(double centered, double scale, double shift) {
  return __fma_rn(centered, scale, shift);
}

// relu that keeps NaN (like torch.relu).
template <typename A>
__device__ __forceinline__ A relu(A v) {
  return v < A(0) ? A(0) : v;
}

// ---------------------------------------------------------------------------
// Operand indexing
// ---------------------------------------------------------------------------

// Index divisions in 32 bits: a 64-bit division is a subroutine call on the
// GPU, whose saved registers land in local memory. The launchers check
// kFits32 on what is divided (rows of a non-uniform walk, planar lines).
constexpr int64_t kFits32 = int64_t(1) << 32;

__host__ __device__ __forceinline__ int64_t div32(int64_t a, int64_t b) {
  return static_cast<int64_t>(static_cast<uint32_t>(a) / static_cast<uint32_t>(b));
}

// Rows walk (channels_last): row r = (n, h, w); uniform spacing turns the
// index math into one multiply. Non-uniform walks need rows < kFits32.
struct RowIndex {
  int64_t HW, W, sn, sh, sw;
  bool uniform;

  __host__ __device__ int64_t operator()(int64_t r) const {
    if (uniform) return r * sw;
    const int64_t n = div32(r, HW), hw = r - n * HW;
    const int64_t h = div32(hw, W);
    return n * sn + h * sh + (hw - h * W) * sw;
  }
};

// Whether the kernels can index this walk (see kFits32).
inline bool rows_indexable(const RowIndex& i, int64_t rows) { return i.uniform || rows < kFits32; }

inline RowIndex row_index(const Geometry& g, const Strides& s) {
  const bool uniform =
      (g.H == 1 || s.h == g.W * s.w) && (g.N == 1 || s.n == g.H * g.W * s.w);
  return {g.H * g.W, g.W, s.n, s.h, s.w, uniform};
}

// Planar walk: lines (n, c, h) of line_len contiguous elements; one line of
// H*W per (n, c) when every operand is dense over H and W.
struct PlanarShape {
  int64_t lines_per_nc, line_len;
};

inline bool dense_hw(const Geometry& g, const Strides& s) { return g.H == 1 || s.h == g.W; }

// Offset of the first element of line `l` (n, h) of channel c; l < kFits32.
__host__ __device__ __forceinline__ int64_t line_offset(const Strides& s, int64_t lines_per_nc,
                                                        int64_t l, int64_t c) {
  const int64_t n = div32(l, lines_per_nc);
  return n * s.n + c * s.c + (l - n * lines_per_nc) * s.h;
}

// Whether an operand allows V-element accesses: an aligned base, and every
// step between accesses a multiple of V elements.
inline bool aligned_for(const void* p, int64_t elem_size, int V) {
  return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(elem_size * V) == 0;
}

inline bool rows_vectorizable(const Geometry& g, const void* p, const Strides& s, int64_t elem,
                              int V) {
  if (p == nullptr) return true;
  if (!aligned_for(p, elem, V) || g.C % V != 0) return false;
  const bool n_ok = g.N == 1 || s.n % V == 0;
  const bool h_ok = g.H == 1 || s.h % V == 0;
  const bool w_ok = g.W == 1 || s.w % V == 0;
  return n_ok && h_ok && w_ok;
}

inline bool planar_vectorizable(const Geometry& g, const PlanarShape& shape, const void* p,
                                const Strides& s, int64_t elem, int V) {
  if (p == nullptr) return true;
  if (!aligned_for(p, elem, V) || shape.line_len % V != 0) return false;
  const bool n_ok = g.N == 1 || s.n % V == 0;
  const bool c_ok = g.C == 1 || s.c % V == 0;
  const bool h_ok = shape.lines_per_nc == 1 || s.h % V == 0;
  return n_ok && c_ok && h_ok;
}

// ---------------------------------------------------------------------------
// Launch shapes
// ---------------------------------------------------------------------------

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

// Multiprocessors of the current device, read once per device.
inline int sm_count() {
  static int counts[64] = {0};
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= 64) return 1;
  if (counts[device] == 0) {
    int n = 1;
    if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) n = 1;
    counts[device] = n > 0 ? n : 1;
  }
  return counts[device];
}

// Blocks of `threads` that fill the device once (the grid of the grid-stride
// kernels), from the kernel's own occupancy.
template <typename Kernel>
int64_t resident_blocks(Kernel kernel, int threads) {
  int per_sm = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0) != cudaSuccess ||
      per_sm < 1)
    per_sm = 1;
  return static_cast<int64_t>(per_sm) * sm_count();
}

// Rows walk: blockDim.x threads across channel groups of V (at most 32 groups:
// 512 contiguous bytes per row for 16-byte groups), blockDim.y across rows;
// gridDim.y tiles the channels.
struct RowsShape {
  unsigned bx, by, tiles;
};

inline RowsShape rows_shape(int64_t C, int V) {
  const int64_t groups = ceil_div(C, V);
  const int64_t bx = groups < 32 ? groups : 32;
  const int64_t by = kThreads / bx;
  return {static_cast<unsigned>(bx), static_cast<unsigned>(by),
          static_cast<unsigned>(ceil_div(groups, bx))};
}

// Planar walk: blockDim.x threads along a line (a power of two, 32 to 256),
// blockDim.y lines side by side.
inline dim3 planar_block(int64_t line_len, int V) {
  const int64_t groups = ceil_div(line_len, V);
  unsigned bx = 32;
  while (bx < kThreads && bx < groups) bx *= 2;
  return dim3(bx, kThreads / bx);
}

constexpr unsigned kMaxGridY = 65535;

// ---------------------------------------------------------------------------
// Block reductions
// ---------------------------------------------------------------------------

// Per-thread fp64 accumulators of the rows walk, kept in shared memory (not
// in registers: a 16-byte group of bf16 has 8 lanes, 16 doubles for two
// sums, which would halve the occupancy). Slot (lane i, thread t) is
// acc[i * threads + t]: consecutive threads hit consecutive words.
__device__ __forceinline__ unsigned block_tid() { return threadIdx.y * blockDim.x + threadIdx.x; }
__device__ __forceinline__ unsigned block_threads() { return blockDim.x * blockDim.y; }

template <typename A, int V>
__device__ __forceinline__ void flush_lanes(double* acc, A (&part)[V]) {
  const unsigned t = block_tid(), threads = block_threads();
#pragma unroll
  for (int i = 0; i < V; ++i) {
    acc[i * threads + t] += static_cast<double>(part[i]);
    part[i] = A(0);
  }
}

template <int V>
__device__ __forceinline__ void zero_lanes(double* acc) {
  const unsigned t = block_tid(), threads = block_threads();
#pragma unroll
  for (int i = 0; i < V; ++i) acc[i * threads + t] = 0;
}

// Rows walk: sums the per-thread accumulators over the threads that share
// threadIdx.x (they hold the same channels). Call after a __syncthreads()
// that follows the last flush. Returns, in the thread whose linear id is
// col < blockDim.x * V, the sum for channel `col` of the block's tile (group
// col / V, lane col % V); 0 elsewhere.
template <int V>
__device__ __forceinline__ double sum_columns(const double* acc) {
  const unsigned col = block_tid(), threads = block_threads();
  double s = 0;
  if (col < blockDim.x * V) {
    const unsigned group = col / V, lane = col % V;
    for (unsigned y = 0; y < blockDim.y; ++y) s += acc[lane * threads + y * blockDim.x + group];
  }
  return s;
}

// Sums v over every thread of the block; the result is valid in thread 0.
// `buf` holds 32 doubles.
__device__ __forceinline__ double block_sum(double* buf, double v) {
  const unsigned tid = threadIdx.y * blockDim.x + threadIdx.x;
  const unsigned lane = tid % 32, warp = tid / 32;
  const unsigned warps = (blockDim.x * blockDim.y + 31) / 32;
#pragma unroll
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  if (lane == 0) buf[warp] = v;
  __syncthreads();
  double s = 0;
  if (tid == 0) {
    for (unsigned w = 0; w < warps; ++w) s += buf[w];
  }
  __syncthreads();
  return s;
}

}  // namespace resnet_fast::cuda
