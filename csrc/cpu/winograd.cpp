// CPU entry points of the Winograd F(4x4, 3x3) convolution (winograd_weight,
// winograd_conv3x3): a 3x3, stride-1, padding-1 convolution
// as input tile transforms (one pass over the input), 36 matrix products
// (at::bmm) and output tile transforms with the bias, residual add and ReLU
// fused (one pass writing the output). It does a quarter of the direct
// convolution's multiplications, and rounds a little more (see
// kernels/winograd_impl.h, which also holds the matrices B and A). A CPU
// algorithm with no GPU twin: on a GPU, cuDNN picks Winograd itself.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <vector>

#include "../common/tensor_geometry.h"
#include "isa_choice.h"
#include "winograd.h"

namespace resnet_fast::cpu {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

constexpr int64_t kElements = 36;  // 6 x 6 elements of a transformed tile

bool has(const OptTensor& t) { return t.has_value() && t->defined(); }

int64_t tiles_along(int64_t size) { return (size + 3) / 4; }

// Tiles per chunk: 64, so that a thread's transformed tiles and products (36
// x 64 x (C + K) values, 1.2 MB in float32 at C = K = 64) stay in its cache
// between the transforms and the products (measured on ResNet stages at batch
// 64: 48 to 64 are fastest; 24 re-reads the weight too often, 96 outgrows
// the cache), or fewer so that every thread gets a chunk.
int64_t chunk_tiles(int64_t T) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  return std::max<int64_t>(1, std::min<int64_t>(64, (T + threads - 1) / threads));
}

void check_wide_float(const Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "resnet_fast: ", name, " must be a CPU tensor; got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, "resnet_fast: ", name,
              " must be float32 or float64 (the Winograd convolution has no reduced-precision build); got ",
              t.scalar_type());
}

void check_channels_last(const Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 4, "resnet_fast: ", name, " must be [N, C, H, W]; got ", t.dim(), " dims");
  TORCH_CHECK(t.is_contiguous(at::MemoryFormat::ChannelsLast), "resnet_fast: ", name,
              " must be dense channels_last (x.contiguous(memory_format=torch.channels_last)); got strides ",
              t.strides());
}

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
  check_wide_float(input, "input");
  check_channels_last(input, "input");
  const int64_t N = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  check_wide_float(weight_tiles, "weight_tiles");
  TORCH_CHECK(weight_tiles.dim() == 3 && weight_tiles.size(0) == kElements && weight_tiles.size(1) == C,
              "resnet_fast: weight_tiles must be [36, C_in, C_out] (winograd_weight) with C_in = ", C,
              "; got ", weight_tiles.sizes());
  TORCH_CHECK(weight_tiles.is_contiguous(), "resnet_fast: weight_tiles must be contiguous");
  TORCH_CHECK(weight_tiles.scalar_type() == input.scalar_type(), "resnet_fast: weight_tiles dtype ",
              weight_tiles.scalar_type(), " differs from input dtype ", input.scalar_type());
  const int64_t K = weight_tiles.size(2);
  if (has(bias)) {
    check_wide_float(*bias, "bias");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == K && bias->scalar_type() == input.scalar_type(),
                "resnet_fast: bias must be [", K, "] of dtype ", input.scalar_type(), "; got ", bias->sizes(),
                " ", bias->scalar_type());
  }
  if (has(residual)) {
    check_wide_float(*residual, "residual");
    check_channels_last(*residual, "residual");
    TORCH_CHECK(residual->sizes() == at::IntArrayRef({N, K, H, W}) &&
                    residual->scalar_type() == input.scalar_type(),
                "resnet_fast: residual must be [", N, ", ", K, ", ", H, ", ", W, "] of dtype ",
                input.scalar_type(), "; got ", residual->sizes(), " ", residual->scalar_type());
  }

  Tensor out = at::empty({N, K, H, W}, input.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (poison_outputs()) out.fill_(std::numeric_limits<double>::quiet_NaN());
  if (out.numel() == 0) return out;
  const Tensor b = has(bias) ? bias->contiguous() : Tensor();
  const int64_t T = N * tiles_along(H) * tiles_along(W);
  const Dtype dtype = dtype_of(input.scalar_type());
  const void* bias_p = b.defined() ? b.const_data_ptr() : nullptr;
  const void* residual_p = has(residual) ? residual->const_data_ptr() : nullptr;
  const int64_t chunk = chunk_tiles(T);
  // Each thread takes whole chunks: transform, 36 products, transform back,
  // while its tiles are still in its cache (the products run on one thread
  // inside the parallel region).
  at::parallel_for(0, (T + chunk - 1) / chunk, 1, [&](int64_t c0, int64_t c1) {
    const Tensor tile_buffer = at::empty({kElements * chunk * C}, input.options());
    const Tensor product_buffer = at::empty({kElements * chunk * K}, input.options());
    for (int64_t ci = c0; ci < c1; ++ci) {
      const int64_t first = ci * chunk, count = std::min(chunk, T - first);
      // Dense [36, count, *] views: the kernels index them so.
      Tensor tiles = tile_buffer.narrow(0, 0, kElements * count * C).view({kElements, count, C});
      Tensor products = product_buffer.narrow(0, 0, kElements * count * K).view({kElements, count, K});
      isa_kernels().winograd_input(
          WinogradInputParams{dtype, N, C, H, W, first, count, input.const_data_ptr(), tiles.mutable_data_ptr()});
      at::bmm_out(products, tiles, weight_tiles);
      isa_kernels().winograd_output(WinogradOutputParams{dtype, N, K, H, W, first, count, products.const_data_ptr(),
                                                     bias_p, residual_p, out.mutable_data_ptr(), relu});
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
