// Helpers shared by the RoIAlign CPU forward (roi_align_cpu.cc) and backward
// (roi_align_cpu_backward.cc): the per-axis sample tables, the RoI's level,
// and the per-ISA compilation of hot loops.
#ifndef TFDET_KERNELS_ROI_ALIGN_CPU_COMMON_H_
#define TFDET_KERNELS_ROI_ALIGN_CPU_COMMON_H_

#include <cstdint>

#include "kernels/roi_align_cpu.h"

// The kernels' hot loops are compiled for AVX-512, AVX2+FMA and the baseline,
// the best one picked at load time (GCC / Clang function multiversioning):
// the op library is built for the baseline x86-64 ISA (SSE2), whose 4-wide
// loops left the channel loops at a quarter of an AVX-512 core's width.
#if defined(__x86_64__) && defined(__has_attribute)
#if __has_attribute(target_clones) && !defined(__clang__) && __GNUC__ >= 11
#define TFDET_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
#endif
#ifndef TFDET_CPU_CLONES
#define TFDET_CPU_CLONES
#endif

namespace tfdet {
namespace roi_align_cpu {

// Channels per inner loop (and per backward work unit): one AVX-512 vector
// of floats 4 times over.
constexpr int kChannelBlock = 64;

// Fills interp[bin * grid + s] for `bins` bins of `grid` samples each.
inline void FillAxis(float start, float bin_size, int bins, int grid, int size,
                     AxisInterp* interp) {
  for (int b = 0; b < bins; ++b) {
    for (int s = 0; s < grid; ++s) {
      interp[b * grid + s] = InterpAxis(RoiSampleCoord(start, bin_size, b, s, grid), size);
    }
  }
}

// Returns the level of RoI r, or -1 if its level or batch index is out of
// range (such RoIs are skipped).
inline int RoiLevel(int64_t r, const int32_t* batch_indices, const int32_t* roi_levels,
                    int num_levels, int batch) {
  const int level = roi_levels ? roi_levels[r] : 0;
  if (level < 0 || level >= num_levels) return -1;
  const int b = batch_indices[r];
  if (b < 0 || b >= batch) return -1;
  return level;
}

}  // namespace roi_align_cpu
}  // namespace tfdet

#endif  // TFDET_KERNELS_ROI_ALIGN_CPU_COMMON_H_
