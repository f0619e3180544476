// RoIAlign CUDA launchers: device pointers in, work queued on `stream`.
// Same semantics as the CPU kernels (roi_align_cpu.h), whose per-RoI
// geometry they share. T is float or __half; sums are accumulated in float.
//
// All pointer arguments are device pointers except the `levels` arrays,
// which live on the host (they are packed into the kernel arguments).
// At most kRoiAlignCudaMaxLevels feature maps.
//
// The header needs no CUDA header (it declares cudaStream_t and __half as the
// toolkit does), so plain g++ builds its callers, the TF op wrappers and the
// harness shims, whatever CUDA headers they see. The launchers return a
// cudaError_t as int: 0 is cudaSuccess; RoiAlignCudaErrorString names it.
#ifndef TFDET_KERNELS_ROI_ALIGN_CUDA_H_
#define TFDET_KERNELS_ROI_ALIGN_CUDA_H_

#include <cstddef>
#include <cstdint>

#include "kernels/roi_align_cpu.h"

// CUDA's half type (cuda_fp16.h). Declared here so that host-only callers
// (the TF op wrappers, the harness) can name RoiAlign*Cuda<__half> and pass
// pointers without including cuda_fp16.h, which needs the toolkit's full
// header tree.
struct __half;
// As in CUDA's driver_types.h (an identical typedef may be repeated).
struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;

namespace tfdet {

constexpr int kRoiAlignCudaMaxLevels = 8;

template <typename T>
struct RoiAlignLevelCuda {
  const T* data;  // forward input [batch, height, width, channels]
  T* grad;        // backward output, same shape
  int height;
  int width;
  float spatial_scale;
};

// Forward. output: [num_rois, pooled_height, pooled_width, channels].
// roi_levels may be nullptr (every RoI on level 0).
template <typename T>
int RoiAlignForwardCuda(const RoiAlignLevelCuda<T>* levels, int num_levels, int batch,
                                int channels, const float* rois, const int32_t* batch_indices,
                                const int32_t* roi_levels, int64_t num_rois,
                                const RoiAlignAttrs& attrs, T* output, cudaStream_t stream);

// Bytes of device workspace RoiAlignBackwardCuda needs: 0 for float, a float
// buffer as large as all levels' gradients together for __half (atomicAdd in
// float, then conversion). level_elements[l] = batch * height_l * width_l *
// channels.
template <typename T>
size_t RoiAlignBackwardCudaWorkspaceBytes(const int64_t* level_elements, int num_levels);

// Backward: overwrites levels[l].grad with d(loss)/d(features) given grads
// [num_rois, pooled_height, pooled_width, channels]. `workspace` holds at
// least RoiAlignBackwardCudaWorkspaceBytes<T>(...) bytes (may be nullptr when
// that is 0), aligned for float.
template <typename T>
int RoiAlignBackwardCuda(const RoiAlignLevelCuda<T>* levels, int num_levels, int batch,
                                 int channels, const T* grads, const float* rois,
                                 const int32_t* batch_indices, const int32_t* roi_levels,
                                 int64_t num_rois, const RoiAlignAttrs& attrs, void* workspace,
                                 cudaStream_t stream);

// Copies `bytes` from host to device on `stream` and waits for the copy (and
// the work queued before it), so the host buffer may be released at once.
int RoiAlignCopyToDevice(void* dst, const void* src, size_t bytes, cudaStream_t stream);

// The name of a launcher's error code.
const char* RoiAlignCudaErrorString(int error);

}  // namespace tfdet

#endif  // TFDET_KERNELS_ROI_ALIGN_CUDA_H_
