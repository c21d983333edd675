// The emulation's kernel launch, what RESNET_FAST_LAUNCH (kernels/
// launch_macro.h) expands to without nvcc:
//
//   launch(name, caller, grid, block, stream, kernel)(args...)
//
// converts the arguments to the kernel's parameter types once (as a CUDA
// launch copies them into parameter memory), then runs the grid before it
// returns: every block in turn, each block's threads as fibers
// (emu_scheduler.cpp). Each thread calls the kernel with its own copies of
// the parameters. An invalid launch shape runs nothing and is reported by
// cudaGetLastError(), as in CUDA.
#pragma once

#include <cstddef>
#include <tuple>
#include <utility>
#include <vector>

#include "emu_runtime_api.h"
#include "emu_vector_types.h"

namespace resnet_fast::emulation {
namespace detail {

struct LaunchInfo {
  const char* kernel;  // as written at the launch, e.g. "bn_stats_rows_kernel<T, V>"
  const char* caller;  // the launching function, with its template arguments
  dim3 grid, block;
};

// Runs the grid; `thread_main(call)` runs the kernel body of one thread.
void run_grid(const LaunchInfo& info, void (*thread_main)(void*), void* call);

template <typename... P>
struct KernelCall {
  void (*kernel)(P...);
  std::tuple<P...> args;

  static void thread_main(void* self) {
    auto* call = static_cast<KernelCall*>(self);
    std::apply(call->kernel, call->args);  // by value: a copy per thread
  }
};

}  // namespace detail

template <typename... P>
class Launcher {
 public:
  Launcher(const char* kernel_name, const char* caller, dim3 grid, dim3 block,
           void (*kernel)(P...))
      : info_{kernel_name, caller, grid, block}, kernel_(kernel) {}

  template <typename... A>
  void operator()(A&&... args) const {
    static_assert(sizeof...(A) == sizeof...(P), "kernel launched with a wrong argument count");
    detail::KernelCall<P...> call{kernel_, std::tuple<P...>(std::forward<A>(args)...)};
    detail::run_grid(info_, &detail::KernelCall<P...>::thread_main, &call);
  }

 private:
  detail::LaunchInfo info_;
  void (*kernel_)(P...);
};

template <typename... P>
Launcher<P...> launch(const char* kernel_name, const char* caller, dim3 grid, dim3 block,
                      cudaStream_t /*stream: launches are synchronous*/, void (*kernel)(P...)) {
  return Launcher<P...>(kernel_name, caller, grid, block, kernel);
}

// The last launch run (or rejected) on this process, for tests that check
// which kernel a launcher picked and its shape. kernel == nullptr before any.
struct LaunchRecord {
  const char* kernel;  // as written at the launch
  const char* caller;  // the launching function, with its template arguments
  dim3 grid, block;
};
LaunchRecord last_launch();

// The last launches run (or rejected) on this process, oldest first, at most
// kRecentLaunches: what an op launched, for tests that check the split of
// a reduction that a finalize launch followed.
constexpr std::size_t kRecentLaunches = 16;
std::vector<LaunchRecord> recent_launches();

// Fiber stacks, for tests and measurements: the size each fiber gets
// (RESNET_FAST_EMU_STACK_KB, default in emu_scheduler.cpp), the most any
// fiber of this OS thread has used so far, and how many fibers exist.
std::size_t fiber_stack_size();
std::size_t fiber_stack_high_water();
std::size_t fiber_count();

}  // namespace resnet_fast::emulation
