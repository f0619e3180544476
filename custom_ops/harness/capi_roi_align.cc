// extern "C" shims over the RoIAlign kernels for harness/check_roi_align.py
// (ctypes): the single-level op (tfdet_roi_align_*) and the multi-level one
// (tfdet_roi_align_multilevel_*), which pools RoI r from level roi_levels[r].
// Return 0 on success and -1 on bad sizes (both kinds); the CUDA shims
// otherwise return the cudaError_t code.
//
// dtype for the CUDA shims: 0 = float32, 1 = float16. Pointers passed to the
// CUDA shims are device pointers, except the per-level arrays of the
// multi-level shims (features / grad_features: host arrays of device
// pointers; heights, widths, spatial_scales: host arrays), which have
// num_levels entries, num_levels in [1, kRoiAlignCudaMaxLevels] for the CPU
// shims too. `stream` is a cudaStream_t (0 = default).
#include <cstdint>

#include "kernels/roi_align_cpu.h"
// Declarations only (no CUDA header needed): kRoiAlignCudaMaxLevels in every
// build, the launchers only when they are linked in.
#include "kernels/roi_align_cuda.h"

#ifndef TFDET_HARNESS_WITH_CUDA
#define TFDET_HARNESS_WITH_CUDA 0
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

// Checks the per-level arrays of a multi-level call: num_levels in
// [1, kRoiAlignCudaMaxLevels], non-negative sizes, and a non-null pointer in
// `pointers` (features or grad_features) for every non-empty level.
bool BadLevels(const void* const* pointers, const int* heights, const int* widths,
               const float* spatial_scales, int num_levels, int batch, int channels) {
  if (num_levels < 1 || num_levels > tfdet::kRoiAlignCudaMaxLevels) return true;
  if (pointers == nullptr || heights == nullptr || widths == nullptr ||
      spatial_scales == nullptr) {
    return true;
  }
  for (int l = 0; l < num_levels; ++l) {
    if (heights[l] < 0 || widths[l] < 0) return true;
    const int64_t elements = static_cast<int64_t>(batch) * heights[l] * widths[l] * channels;
    if (elements > 0 && pointers[l] == nullptr) return true;
  }
  return false;
}

bool BadMultiLevel(const void* const* pointers, const int* heights, const int* widths,
                   const float* spatial_scales, int num_levels, int batch, int channels,
                   int64_t num_rois, int pooled_height, int pooled_width, int sampling_ratio) {
  // Height and width are checked per level by BadLevels.
  return BadSizes(batch, 0, 0, channels, num_rois, pooled_height, pooled_width,
                  sampling_ratio) ||
         BadLevels(pointers, heights, widths, spatial_scales, num_levels, batch, channels);
}

#if TFDET_HARNESS_WITH_CUDA

template <typename T>
int MultiLevelForwardCuda(const void* const* features, const int* heights, const int* widths,
                          const float* spatial_scales, int num_levels, int batch, int channels,
                          const float* rois, const int32_t* batch_indices,
                          const int32_t* roi_levels, int64_t num_rois,
                          const tfdet::RoiAlignAttrs& attrs, void* output, cudaStream_t stream) {
  tfdet::RoiAlignLevelCuda<T> levels[tfdet::kRoiAlignCudaMaxLevels];
  for (int l = 0; l < num_levels; ++l) {
    levels[l] = tfdet::RoiAlignLevelCuda<T>{static_cast<const T*>(features[l]), nullptr,
                                            heights[l], widths[l], spatial_scales[l]};
  }
  return tfdet::RoiAlignForwardCuda<T>(levels, num_levels, batch, channels, rois, batch_indices,
                                       roi_levels, num_rois, attrs, static_cast<T*>(output),
                                       stream);
}

template <typename T>
int MultiLevelBackwardCuda(const void* grads, const int* heights, const int* widths,
                           const float* spatial_scales, int num_levels, int batch, int channels,
                           const float* rois, const int32_t* batch_indices,
                           const int32_t* roi_levels, int64_t num_rois,
                           const tfdet::RoiAlignAttrs& attrs, void* const* grad_features,
                           void* workspace, cudaStream_t stream) {
  tfdet::RoiAlignLevelCuda<T> levels[tfdet::kRoiAlignCudaMaxLevels];
  for (int l = 0; l < num_levels; ++l) {
    levels[l] = tfdet::RoiAlignLevelCuda<T>{nullptr, static_cast<T*>(grad_features[l]),
                                            heights[l], widths[l], spatial_scales[l]};
  }
  return tfdet::RoiAlignBackwardCuda<T>(levels, num_levels, batch, channels,
                                        static_cast<const T*>(grads), rois, batch_indices,
                                        roi_levels, num_rois, attrs, workspace, stream);
}

#endif  // TFDET_HARNESS_WITH_CUDA

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

// Multi-level forward. features[l] [B, heights[l], widths[l], C]; rois [R, 4],
// batch_indices [R], roi_levels [R] in [0, num_levels) (nullptr: all level 0)
// -> output [R, ph, pw, C]. A RoI whose level or batch index is out of range
// gets zeros.
int tfdet_roi_align_multilevel_forward_cpu(const float* const* features, const int* heights,
                                           const int* widths, const float* spatial_scales,
                                           int num_levels, int batch, int channels,
                                           const float* rois, const int32_t* batch_indices,
                                           const int32_t* roi_levels, int64_t num_rois,
                                           int pooled_height, int pooled_width,
                                           int sampling_ratio, int aligned, float* output) {
  if (BadMultiLevel(reinterpret_cast<const void* const*>(features), heights, widths,
                    spatial_scales, num_levels, batch, channels, num_rois, pooled_height,
                    pooled_width, sampling_ratio)) {
    return -1;
  }
  tfdet::RoiAlignLevelCpu levels[tfdet::kRoiAlignCudaMaxLevels];
  for (int l = 0; l < num_levels; ++l) {
    levels[l] = tfdet::RoiAlignLevelCpu{features[l], nullptr, heights[l], widths[l],
                                        spatial_scales[l]};
  }
  tfdet::RoiAlignForwardCpu(levels, num_levels, batch, channels, rois, batch_indices,
                            roi_levels, num_rois,
                            MakeAttrs(pooled_height, pooled_width, sampling_ratio, aligned),
                            output, tfdet::SerialFor());
  return 0;
}

// Multi-level backward: grads [R, ph, pw, C] -> grad_features[l]
// [B, heights[l], widths[l], C], every level overwritten (zeros where no RoI
// of that level reaches).
int tfdet_roi_align_multilevel_backward_cpu(const float* grads, const int* heights,
                                            const int* widths, const float* spatial_scales,
                                            int num_levels, int batch, int channels,
                                            const float* rois, const int32_t* batch_indices,
                                            const int32_t* roi_levels, int64_t num_rois,
                                            int pooled_height, int pooled_width,
                                            int sampling_ratio, int aligned,
                                            float* const* grad_features) {
  if (BadMultiLevel(reinterpret_cast<const void* const*>(grad_features), heights, widths,
                    spatial_scales, num_levels, batch, channels, num_rois, pooled_height,
                    pooled_width, sampling_ratio)) {
    return -1;
  }
  tfdet::RoiAlignLevelCpu levels[tfdet::kRoiAlignCudaMaxLevels];
  for (int l = 0; l < num_levels; ++l) {
    levels[l] = tfdet::RoiAlignLevelCpu{nullptr, grad_features[l], heights[l], widths[l],
                                        spatial_scales[l]};
  }
  tfdet::RoiAlignBackwardCpu(levels, num_levels, batch, channels, grads, rois, batch_indices,
                             roi_levels, num_rois,
                             MakeAttrs(pooled_height, pooled_width, sampling_ratio, aligned),
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

// Multi-level forward on the device; see tfdet_roi_align_multilevel_forward_cpu.
// `features` is a host array of num_levels device pointers; rois,
// batch_indices, roi_levels (may be nullptr) and output are device pointers.
int tfdet_roi_align_multilevel_forward_cuda(int dtype, const void* const* features,
                                            const int* heights, const int* widths,
                                            const float* spatial_scales, int num_levels,
                                            int batch, int channels, const float* rois,
                                            const int32_t* batch_indices,
                                            const int32_t* roi_levels, int64_t num_rois,
                                            int pooled_height, int pooled_width,
                                            int sampling_ratio, int aligned, void* output,
                                            void* stream) {
  if (BadMultiLevel(features, heights, widths, spatial_scales, num_levels, batch, channels,
                    num_rois, pooled_height, pooled_width, sampling_ratio)) {
    return -1;
  }
  const tfdet::RoiAlignAttrs attrs =
      MakeAttrs(pooled_height, pooled_width, sampling_ratio, aligned);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  return dtype == 0
             ? MultiLevelForwardCuda<float>(features, heights, widths, spatial_scales,
                                            num_levels, batch, channels, rois, batch_indices,
                                            roi_levels, num_rois, attrs, output, s)
             : MultiLevelForwardCuda<__half>(features, heights, widths, spatial_scales,
                                             num_levels, batch, channels, rois, batch_indices,
                                             roi_levels, num_rois, attrs, output, s);
}

// Workspace bytes tfdet_roi_align_multilevel_backward_cuda needs; -1 on bad
// sizes.
int64_t tfdet_roi_align_multilevel_backward_cuda_workspace_bytes(int dtype, const int* heights,
                                                                 const int* widths,
                                                                 int num_levels, int batch,
                                                                 int channels) {
  if (num_levels < 1 || num_levels > tfdet::kRoiAlignCudaMaxLevels || heights == nullptr ||
      widths == nullptr || batch < 0 || channels < 0) {
    return -1;
  }
  int64_t elements[tfdet::kRoiAlignCudaMaxLevels];
  for (int l = 0; l < num_levels; ++l) {
    if (heights[l] < 0 || widths[l] < 0) return -1;
    elements[l] = static_cast<int64_t>(batch) * heights[l] * widths[l] * channels;
  }
  return static_cast<int64_t>(
      dtype == 0 ? tfdet::RoiAlignBackwardCudaWorkspaceBytes<float>(elements, num_levels)
                 : tfdet::RoiAlignBackwardCudaWorkspaceBytes<__half>(elements, num_levels));
}

// Multi-level backward on the device: grads [R, ph, pw, C] -> every
// grad_features[l] overwritten. `grad_features` is a host array of
// num_levels device pointers; `workspace` holds the bytes the function above
// returns (may be nullptr when that is 0).
int tfdet_roi_align_multilevel_backward_cuda(int dtype, const void* grads, const int* heights,
                                             const int* widths, const float* spatial_scales,
                                             int num_levels, int batch, int channels,
                                             const float* rois, const int32_t* batch_indices,
                                             const int32_t* roi_levels, int64_t num_rois,
                                             int pooled_height, int pooled_width,
                                             int sampling_ratio, int aligned,
                                             void* const* grad_features, void* workspace,
                                             void* stream) {
  if (BadMultiLevel(grad_features, heights, widths, spatial_scales, num_levels, batch,
                    channels, num_rois, pooled_height, pooled_width, sampling_ratio)) {
    return -1;
  }
  const tfdet::RoiAlignAttrs attrs =
      MakeAttrs(pooled_height, pooled_width, sampling_ratio, aligned);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  return dtype == 0
             ? MultiLevelBackwardCuda<float>(grads, heights, widths, spatial_scales, num_levels,
                                             batch, channels, rois, batch_indices, roi_levels,
                                             num_rois, attrs, grad_features, workspace, s)
             : MultiLevelBackwardCuda<__half>(grads, heights, widths, spatial_scales,
                                              num_levels, batch, channels, rois, batch_indices,
                                              roi_levels, num_rois, attrs, grad_features,
                                              workspace, s);
}

const char* tfdet_roi_align_cuda_error_string(int error) {
  return tfdet::RoiAlignCudaErrorString(error);
}

#endif  // TFDET_HARNESS_WITH_CUDA

}  // extern "C"
