// add + ReLU over dense storage shared by both operands:
//   forward:  out = relu(a + b)          read a, b; write out: 3 passes
//   backward: grad = dy * [out > 0]      read dy, out; write grad: 3 passes
// (eager: add then relu, 5 passes forward). 16-byte accesses when all three
// pointers are 16-byte aligned, the numel % V tail element by element.
#include <cstdint>

#include "device_common.cuh"
#include "launch.h"

namespace resnet_fast::cuda {
namespace {

template <typename T, int V>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    add_relu_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ out,
                    int64_t numel) {
  using A = acc_t<T>;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t groups = numel / V;
  for (int64_t i = tid; i < groups; i += stride) {
    A va[V], vb[V], y[V];
    load_acc<T, V>(a + i * V, va);
    load_acc<T, V>(b + i * V, vb);
#pragma unroll
    for (int k = 0; k < V; ++k) y[k] = relu(va[k] + vb[k]);
    store_acc<T, V>(out + i * V, y);
  }
  for (int64_t i = groups * V + tid; i < numel; i += stride)
    out[i] = from_acc<T>(relu(to_acc(a[i]) + to_acc(b[i])));
}

template <typename T, int V>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    relu_backward_kernel(const T* __restrict__ dy, const T* __restrict__ out,
                         T* __restrict__ grad, int64_t numel) {
  using A = acc_t<T>;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t groups = numel / V;
  for (int64_t i = tid; i < groups; i += stride) {
    A vd[V], vo[V], y[V];
    load_acc<T, V>(dy + i * V, vd);
    load_acc<T, V>(out + i * V, vo);
#pragma unroll
    for (int k = 0; k < V; ++k) y[k] = vo[k] > A(0) ? vd[k] : A(0);
    store_acc<T, V>(grad + i * V, y);
  }
  for (int64_t i = groups * V + tid; i < numel; i += stride)
    grad[i] = from_acc<T>(to_acc(out[i]) > A(0) ? to_acc(dy[i]) : A(0));
}

template <typename Kernel>
unsigned elementwise_blocks(Kernel kernel, int64_t numel, int V) {
  const int64_t needed = ceil_div(ceil_div(numel, V), kThreads);
  return static_cast<unsigned>(clamp64(resident_blocks(kernel, kThreads), 1, needed));
}

template <typename T>
struct AddRelu {
  static cudaError_t run(const AddReluParams& p, cudaStream_t stream) {
    constexpr int V = kVec<T>;
    const T* a = static_cast<const T*>(p.a);
    const T* b = static_cast<const T*>(p.b);
    T* out = static_cast<T*>(p.out);
    const int64_t e = sizeof(T);
    if (aligned_for(a, e, V) && aligned_for(b, e, V) && aligned_for(out, e, V)) {
      const unsigned blocks = elementwise_blocks(add_relu_kernel<T, V>, p.numel, V);
      RESNET_FAST_LAUNCH(blocks, kThreads, stream, add_relu_kernel<T, V>)(a, b, out, p.numel);
    } else {
      const unsigned blocks = elementwise_blocks(add_relu_kernel<T, 1>, p.numel, 1);
      RESNET_FAST_LAUNCH(blocks, kThreads, stream, add_relu_kernel<T, 1>)(a, b, out, p.numel);
    }
    return cudaGetLastError();
  }
};

template <typename T>
struct ReluBackward {
  static cudaError_t run(const ReluBackwardParams& p, cudaStream_t stream) {
    constexpr int V = kVec<T>;
    const T* dy = static_cast<const T*>(p.dy);
    const T* out = static_cast<const T*>(p.out);
    T* grad = static_cast<T*>(p.grad);
    const int64_t e = sizeof(T);
    if (aligned_for(dy, e, V) && aligned_for(out, e, V) && aligned_for(grad, e, V)) {
      const unsigned blocks = elementwise_blocks(relu_backward_kernel<T, V>, p.numel, V);
      RESNET_FAST_LAUNCH(blocks, kThreads, stream, relu_backward_kernel<T, V>)(dy, out, grad,
                                                                               p.numel);
    } else {
      const unsigned blocks = elementwise_blocks(relu_backward_kernel<T, 1>, p.numel, 1);
      RESNET_FAST_LAUNCH(blocks, kThreads, stream, relu_backward_kernel<T, 1>)(dy, out, grad,
                                                                               p.numel);
    }
    return cudaGetLastError();
  }
};

}  // namespace

cudaError_t launch_add_relu(const AddReluParams& p, cudaStream_t stream) {
  if (p.numel == 0) return cudaSuccess;
  return by_dtype<AddRelu>(p.dtype, p, stream);
}

cudaError_t launch_relu_backward(const ReluBackwardParams& p, cudaStream_t stream) {
  if (p.numel == 0) return cudaSuccess;
  return by_dtype<ReluBackward>(p.dtype, p, stream);
}

}  // namespace resnet_fast::cuda
