// Portable build of the CPU kernels: at::vec's generic (scalar array) vectors.
// Listed first among the sources so that the linker keeps this build's copy
// of any inline function that the ISA builds also instantiate.
#define CPU_CAPABILITY DEFAULT
#define RF_KERNEL_NS isa_default
#include "kernels_impl.h"

RF_DEFINE_KERNEL_TABLE(kernels_default, "default")
