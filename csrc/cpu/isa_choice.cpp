// Picks the widest ISA build of the CPU kernels that this processor runs.
// RESNET_FAST_CPU_CAPABILITY=default|avx2|avx512 caps the choice (read once,
// at the first call), so the portable build can be tested on any machine.
#include "isa_choice.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <string>

namespace resnet_fast::cpu {
namespace {

int rank_of(const std::string& name) {
  if (name == "default") return 0;
  if (name == "avx2") return 1;
  if (name == "avx512") return 2;
  TORCH_CHECK(false, "RESNET_FAST_CPU_CAPABILITY must be one of default, avx2, avx512; got '", name,
              "'");
}

bool cpu_has_avx2() {
#if defined(__GNUC__) && defined(__x86_64__)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c") && __builtin_cpu_supports("bmi2");
#else
  return false;
#endif
}

bool cpu_has_avx512() {
#if defined(__GNUC__) && defined(__x86_64__)
  return cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

const IsaKernels& select() {
  const char* env = std::getenv("RESNET_FAST_CPU_CAPABILITY");
  const int cap = env != nullptr && *env != '\0' ? rank_of(env) : 2;
  if (cap >= 2 && cpu_has_avx512() && kernels_avx512() != nullptr) return *kernels_avx512();
  if (cap >= 1 && cpu_has_avx2() && kernels_avx2() != nullptr) return *kernels_avx2();
  return *kernels_default();
}

}  // namespace

const IsaKernels& isa_kernels() {
  static const IsaKernels& table = select();
  return table;
}

std::string compiled_capabilities() {
  std::string out = "default";
  if (kernels_avx2() != nullptr) out += ",avx2";
  if (kernels_avx512() != nullptr) out += ",avx512";
  return out;
}

}  // namespace resnet_fast::cpu
