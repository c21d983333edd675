// AVX2 + FMA build of the CPU kernels. GCC's target pragma (per translation
// unit, placed before any include) compiles only this file for AVX2, so the
// extension still loads and runs on machines without it. The pragma does not
// define the ISA macros, which sleef.h (pulled in by at::vec) keys its vector
// declarations on, so they are defined here.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#pragma GCC target("avx,avx2,fma,f16c,bmi,bmi2,lzcnt,popcnt")
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define __F16C__ 1
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#define RF_KERNEL_NS isa_avx2
#include "kernels_impl.h"

RF_DEFINE_KERNEL_TABLE(kernels_avx2, "avx2")
#else
#include "isa_kernels.h"
const resnet_fast::cpu::IsaKernels* resnet_fast::cpu::kernels_avx2() { return nullptr; }
#endif
