// resnet_fast._cuda_emulated, a test-only library: the kernels of
// torch.ops.resnet_fast_cuda_emulated run CPU tensors through the CUDA
// build's host code (csrc/ops/), its kernel table
// (csrc/cuda/bn_kernels_cuda.cpp) and its kernels (csrc/cuda/kernels/),
// compiled by the host compiler against the CUDA-on-CPU emulation
// (csrc/cuda/emulation/). The namespace and its contract are declared in
// Python (resnet_fast/_native/emulation.py) before this library loads.
//
// Compiled with -fvisibility=hidden, so that its copies of the host code
// (the same functions as resnet_fast._C's, bound to another kernel table)
// never bind to _C's, whichever loads first.
#include <pybind11/pybind11.h>
#include <torch/library.h>

#include "../ops/kernels_for.h"
#include "../ops/op_families.h"
#include "device_control.h"

namespace resnet_fast {

const BnKernels& kernels_for(const at::Tensor& input) {
  TORCH_CHECK(input.is_cpu(), "resnet_fast_cuda_emulated: runs CPU tensors, got tensors on ",
              input.device());
  return cuda::bn_kernels();
}

}  // namespace resnet_fast

TORCH_LIBRARY_IMPL(resnet_fast_cuda_emulated, CPU, m) {
  resnet_fast::register_bn_fused(m);
  resnet_fast::register_bn_stages(m);
  resnet_fast::register_add_relu(m);
}

namespace {

namespace emu = resnet_fast::cuda_emulated;
namespace py = pybind11;

void set_device(int sm_count, int blocks_per_sm) {
  // The emulation aborts on a bad size; refuse it here with a Python error.
  if (sm_count < 1 || blocks_per_sm < 1)
    throw py::value_error("set_device: sm_count and blocks_per_sm must be >= 1, got " +
                          std::to_string(sm_count) + " and " + std::to_string(blocks_per_sm));
  emu::set_device(sm_count, blocks_per_sm);
}

py::tuple device() {
  const emu::DeviceSize d = emu::device();
  return py::make_tuple(d.sm_count, d.blocks_per_sm);
}

py::list recent_launches() {
  py::list out;
  for (const emu::LaunchShape& l : emu::recent_launches()) {
    py::dict launch;
    launch["kernel"] = l.kernel;
    launch["caller"] = l.caller;
    launch["grid"] = py::make_tuple(l.grid[0], l.grid[1], l.grid[2]);
    launch["block"] = py::make_tuple(l.block[0], l.block[1], l.block[2]);
    out.append(launch);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_cuda_emulated, m) {
  m.doc() = "Test-only: the CUDA kernels on CPU tensors (torch.ops.resnet_fast_cuda_emulated)";
  m.def("set_device", &set_device, py::arg("sm_count"), py::arg("blocks_per_sm"),
        "Sizes the emulated device: sm_count multiprocessors with room for blocks_per_sm "
        "resident blocks of every kernel (at most 64 distinct sizes per process).");
  m.def("device", &device, "(sm_count, blocks_per_sm) of the emulated device.");
  m.def("recent_launches", &recent_launches,
        "The last kernel launches run (or refused) in this process, oldest first (at most 16): "
        "dicts with kernel (as written at the launch), caller (the launching function), grid "
        "and block.");
}
