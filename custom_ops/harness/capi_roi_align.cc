// extern "C" shims over the RoIAlign kernels for harness/check_roi_align.py
// (ctypes). Single-level only. Return 0 on success; the CUDA shims return the
// cudaError_t code, the CPU ones -1 on bad sizes.
//
// dtype for the CUDA shims: 0 = float32, 1 = float16. Pointers passed to the
// CUDA shims are device pointers; `stream` is a cudaStream_t (0 = default).
#include <cstdint>

#include "kernels/roi_align_cpu.h"

#ifndef TFDET_HARNESS_WITH_CUDA
#define TFDET_HARNESS_WITH_CUDA 0
#endif
#if TFDET_HARNESS_WITH_CUDA
#include "kernels/roi_align_cuda.h"
#endif

namespace {

tfdet::RoiAlignAttrs MakeAttrs(int pooled_height, int pooled_width, int sampling_ratio,
                               int aligned) {
  tfdet::RoiAlignAttrs attrs;
  attrs.pooled_height = pooled_height;
  attrs.pooled_width = pooled_width;
  attrs.sampling_ratio = sampling_ratio;
  attrs.aligned = aligned != 0;
  return attrs;
}

bool BadSizes(int batch, int height, int width, int channels, int64_t num_rois,
              int pooled_height, int pooled_width, int sampling_ratio) {
  return batch < 0 || height < 0 || width < 0 || channels < 0 || num_rois < 0 ||
         pooled_height < 1 || pooled_width < 1 || sampling_ratio < 0;
}

}  // namespace

extern "C" {

int tfdet_roi_align_has_cuda() { return TFDET_HARNESS_WITH_CUDA; }

// features [B, H, W, C], rois [R, 4], batch_indices [R] -> output [R, ph, pw, C].
int tfdet_roi_align_forward_cpu(const float* features, int batch, int height, int width,
                                int channels, const float* rois, const int32_t* batch_indices,
                                int64_t num_rois, float spatial_scale, int pooled_height,
                                int pooled_width, int sampling_ratio, int aligned,
                                float* output) {
  if (BadSizes(batch, height, width, channels, num_rois, pooled_height, pooled_width,
               sampling_ratio)) {
    return -1;
  }
  tfdet::RoiAlignLevelCpu level{features, nullptr, height, width, spatial_scale};
  tfdet::RoiAlignForwardCpu(&level, 1, batch, channels, rois, batch_indices, nullptr, num_rois,
                            MakeAttrs(pooled_height, pooled_width, sampling_ratio, aligned),
                            output, tfdet::SerialFor());
  return 0;
}

// grads [R, ph, pw, C] -> grad_features [B, H, W, C] (overwritten).
int tfdet_roi_align_backward_cpu(const float* grads, int batch, int height, int width,
                                 int channels, const float* rois, const int32_t* batch_indices,
                                 int64_t num_rois, float spatial_scale, int pooled_height,
                                 int pooled_width, int sampling_ratio, int aligned,
                                 float* grad_features) {
  if (BadSizes(batch, height, width, channels, num_rois, pooled_height, pooled_width,
               sampling_ratio)) {
    return -1;
  }
  tfdet::RoiAlignLevelCpu level{nullptr, grad_features, height, width, spatial_scale};
  tfdet::RoiAlignBackwardCpu(&level, 1, batch, channels, grads, rois, batch_indices, nullptr,
                             num_rois, MakeAttrs(pooled_height, pooled_width, sampling_ratio,
                                                 aligned),
                             tfdet::SerialFor());
  return 0;
}

#if TFDET_HARNESS_WITH_CUDA

int tfdet_roi_align_forward_cuda(int dtype, const void* features, int batch, int height,
                                 int width, int channels, const float* rois,
                                 const int32_t* batch_indices, int64_t num_rois,
                                 float spatial_scale, int pooled_height, int pooled_width,
                                 int sampling_ratio, int aligned, void* output, void* stream) {
  if (BadSizes(batch, height, width, channels, num_rois, pooled_height, pooled_width,
               sampling_ratio)) {
    return -1;
  }
  const tfdet::RoiAlignAttrs attrs =
      MakeAttrs(pooled_height, pooled_width, sampling_ratio, aligned);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (dtype == 0) {
    tfdet::RoiAlignLevelCuda<float> level{static_cast<const float*>(features), nullptr, height,
                                          width, spatial_scale};
    return tfdet::RoiAlignForwardCuda<float>(&level, 1, batch, channels, rois, batch_indices,
                                             nullptr, num_rois, attrs,
                                             static_cast<float*>(output), s);
  }
  tfdet::RoiAlignLevelCuda<__half> level{static_cast<const __half*>(features), nullptr, height,
                                         width, spatial_scale};
  return tfdet::RoiAlignForwardCuda<__half>(&level, 1, batch, channels, rois, batch_indices,
                                            nullptr, num_rois, attrs,
                                            static_cast<__half*>(output), s);
}

// Workspace bytes tfdet_roi_align_backward_cuda needs for `elements` =
// B * H * W * C feature elements.
int64_t tfdet_roi_align_backward_cuda_workspace_bytes(int dtype, int64_t elements) {
  return static_cast<int64_t>(
      dtype == 0 ? tfdet::RoiAlignBackwardCudaWorkspaceBytes<float>(&elements, 1)
                 : tfdet::RoiAlignBackwardCudaWorkspaceBytes<__half>(&elements, 1));
}

int tfdet_roi_align_backward_cuda(int dtype, const void* grads, int batch, int height, int width,
                                  int channels, const float* rois, const int32_t* batch_indices,
                                  int64_t num_rois, float spatial_scale, int pooled_height,
                                  int pooled_width, int sampling_ratio, int aligned,
                                  void* grad_features, void* workspace, void* stream) {
  if (BadSizes(batch, height, width, channels, num_rois, pooled_height, pooled_width,
               sampling_ratio)) {
    return -1;
  }
  const tfdet::RoiAlignAttrs attrs =
      MakeAttrs(pooled_height, pooled_width, sampling_ratio, aligned);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (dtype == 0) {
    tfdet::RoiAlignLevelCuda<float> level{nullptr, static_cast<float*>(grad_features), height,
                                          width, spatial_scale};
    return tfdet::RoiAlignBackwardCuda<float>(&level, 1, batch, channels,
                                              static_cast<const float*>(grads), rois,
                                              batch_indices, nullptr, num_rois, attrs, workspace,
                                              s);
  }
  tfdet::RoiAlignLevelCuda<__half> level{nullptr, static_cast<__half*>(grad_features), height,
                                         width, spatial_scale};
  return tfdet::RoiAlignBackwardCuda<__half>(&level, 1, batch, channels,
                                             static_cast<const __half*>(grads), rois,
                                             batch_indices, nullptr, num_rois, attrs, workspace,
                                             s);
}

const char* tfdet_roi_align_cuda_error_string(int error) {
  return tfdet::RoiAlignCudaErrorString(error);
}

#endif  // TFDET_HARNESS_WITH_CUDA

}  // extern "C"
