// CPU entry points of the Winograd F(4x4, 3x3) convolution (winograd_weight,
// winograd_conv3x3): a 3x3, stride-1, padding-1 convolution
// as input tile transforms (one pass over the input), 36 matrix products
// (the kernel table's register-blocked products) and output tile transforms
// with the bias, residual add and ReLU fused (one pass writing the output). It
// does a quarter of the direct convolution's multiplications, and rounds a
// little more (see kernels/winograd_impl.h, which also holds the matrices B
// and A). A CPU algorithm with no GPU twin: on a GPU, cuDNN picks Winograd
// itself.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <vector>

#include "../common/tensor_geometry.h"
#include "conv_common.h"
#include "isa_choice.h"
#include "conv_ops.h"

namespace resnet_fast::cpu {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

constexpr int64_t kElements = 36;  // 6 x 6 elements of a transformed tile

int64_t tiles_along(int64_t size) { return (size + 3) / 4; }

// G of kernels/winograd_impl.h: the kernel transform G g G^T.
constexpr double kG[6][3] = {
    {1.0, 0.0, 0.0},
    {-1.0 / 3, -1.0 / 3, -1.0 / 3},
    {1.0 / 3, -1.0 / 3, 1.0 / 3},
    {1.0 / 15, 2.0 / 15, 4.0 / 15},
    {-16.0 / 15, 8.0 / 15, -4.0 / 15},
    {0.0, 0.0, 1.0},
};

// u[e, c, :] = (G g G^T)[e] for the kernels g = w[c, :, :, :] of one input
// channel, all output channels at once (the innermost loops run along K, so
// they vectorize and write u's rows in order).
//   w: [C, 3, 3, K] contiguous; u: [36, C, K].
template <typename T>
void transform_kernels(const T* w, T* u, int64_t C, int64_t K) {
  at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
    std::vector<T> gw(static_cast<size_t>(6 * 3 * K));  // (G g)[i, b, :]
    for (int64_t c = c0; c < c1; ++c) {
      const T* wc = w + c * 9 * K;
      for (int i = 0; i < 6; ++i)
        for (int b = 0; b < 3; ++b) {
          T* row = gw.data() + (i * 3 + b) * K;
          const T g0 = T(kG[i][0]), g1 = T(kG[i][1]), g2 = T(kG[i][2]);
          const T *w0 = wc + b * K, *w1 = wc + (3 + b) * K, *w2 = wc + (6 + b) * K;
          for (int64_t k = 0; k < K; ++k) row[k] = g0 * w0[k] + g1 * w1[k] + g2 * w2[k];
        }
      for (int i = 0; i < 6; ++i)
        for (int j = 0; j < 6; ++j) {
          T* out = u + ((i * 6 + j) * C + c) * K;
          const T g0 = T(kG[j][0]), g1 = T(kG[j][1]), g2 = T(kG[j][2]);
          const T *r0 = gw.data() + (i * 3) * K, *r1 = r0 + K, *r2 = r1 + K;
          for (int64_t k = 0; k < K; ++k) out[k] = r0[k] * g0 + r1[k] * g1 + r2[k] * g2;
        }
    }
  });
}

// weight [K, C, 3, 3] -> [36, C, K]: the transformed kernels, element-major,
// as the right-hand operands of the 36 matrix products; in weight's dtype.
Tensor winograd_weight_cpu(const Tensor& weight) {
  check_wide_float(weight, "weight");
  TORCH_CHECK(weight.dim() == 4 && weight.size(2) == 3 && weight.size(3) == 3,
              "resnet_fast: weight must be [C_out, C_in, 3, 3]; got ", weight.sizes());
  const int64_t K = weight.size(0), C = weight.size(1);
  const Tensor w = weight.permute({1, 2, 3, 0}).contiguous();  // [C, 3, 3, K]
  Tensor u = at::empty({kElements, C, K}, weight.options());
  if (u.numel() == 0) return u;
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "winograd_weight", [&] {
    transform_kernels<scalar_t>(w.const_data_ptr<scalar_t>(), u.mutable_data_ptr<scalar_t>(), C, K);
  });
  return u;
}

// act(conv2d(input, weight, bias, stride=1, padding=1) (+ residual)), with
// weight_tiles = winograd_weight(weight).
//   input:        [N, C, H, W] dense channels_last, float32 or float64
//   weight_tiles: [36, C, K] contiguous, input's dtype
//   bias:         [K] or None, input's dtype
//   residual:     [N, K, H, W] dense channels_last or None, input's dtype
// Returns [N, K, H, W] channels_last.
Tensor winograd_conv3x3_cpu(const Tensor& input, const Tensor& weight_tiles, const OptTensor& bias,
                            const OptTensor& residual, bool relu) {
  const ConvOperands ops = check_conv_operands(input, weight_tiles, "weight_tiles", kElements,
                                                "winograd_weight", bias, residual);
  const int64_t N = ops.N, C = ops.C, H = ops.H, W = ops.W, K = ops.K;
  Tensor out = conv_output(input, ops);
  if (out.numel() == 0) return out;
  const Tensor b = has(bias) ? bias->contiguous() : Tensor();
  const int64_t T = N * tiles_along(H) * tiles_along(W);
  const Dtype dtype = dtype_of(input.scalar_type());
  const void* bias_p = b.defined() ? b.const_data_ptr() : nullptr;
  const void* residual_p = has(residual) ? residual->const_data_ptr() : nullptr;
  const WorkSplit split(T, K);
  at::parallel_for(0, split.items(), 1, [&](int64_t i0, int64_t i1) {
    const Tensor tile_buffer = at::empty({kElements * split.chunk * C}, input.options());
    const Tensor product_buffer = at::empty({kElements * split.chunk * split.block}, input.options());
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t chunk = item / split.blocks, block = item % split.blocks;
      const int64_t first = chunk * split.chunk, count = std::min(split.chunk, T - first);
      const int64_t k0 = block * split.block, Kb = std::min(split.block, K - k0);
      // A chunk split into channel blocks is transformed once per block: it
      // happens only for few tiles, where the transform is cheap.
      void* tiles = tile_buffer.mutable_data_ptr();
      void* products = product_buffer.mutable_data_ptr();
      isa_kernels().winograd_input(WinogradInputParams{dtype, N, C, H, W, first, count, input.const_data_ptr(), tiles});
      isa_kernels().winograd_products(
          WinogradProductParams{dtype, count, C, K, k0, Kb, tiles, weight_tiles.const_data_ptr(), products});
      isa_kernels().winograd_output(WinogradOutputParams{dtype, N, K, H, W, first, count, k0, Kb, products, bias_p,
                                                         residual_p, out.mutable_data_ptr(), relu});
    }
  });
  return out;
}

}  // namespace

void register_winograd(torch::Library& m) {
  m.impl("winograd_weight", &winograd_weight_cpu);
  m.impl("winograd_conv3x3", &winograd_conv3x3_cpu);
}

}  // namespace resnet_fast::cpu
