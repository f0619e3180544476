// RoIAlign (Mask R-CNN), CPU kernels on raw pointers, plus the per-RoI
// sampling geometry shared with the CUDA kernels (roi_align_cuda.cu.cc).
//
// Semantics follow Detectron's caffe2 RoIAlign (aligned = false) and
// detectron2 / torchvision (aligned = true):
//
// * features are NHWC `[batch, height, width, channels]`; a RoI is
//   `(x1, y1, x2, y2)` in input-image pixels, mapped to the feature map by
//   `spatial_scale`. aligned = false: start = x1 * scale, size =
//   max((x2 - x1) * scale, 1). aligned = true: 0.5 is subtracted after
//   scaling and the size is not clamped.
// * each of the `pooled_height x pooled_width` bins averages a
//   `grid_h x grid_w` grid of bilinear samples; grid = sampling_ratio, or
//   ceil(roi size / pooled size) when sampling_ratio is 0 (adaptive, capped at
//   kRoiAlignMaxAdaptiveGrid per axis).
// * a sample with y < -1 or y > height (same for x) contributes 0; otherwise
//   y is clamped below at 0 and, at or past the last row, to the last row.
// * a RoI with a non-finite coordinate (NaN, +-Inf) yields all zeros and
//   receives no gradient.
// * a RoI whose batch index (or level) is out of range is skipped (zeros,
//   no gradient); the TF op rejects such input before calling the kernels.
//
// The multi-level form pools each RoI from the feature map `levels[r]` with
// that level's scale; the single-level op is the case num_levels = 1,
// levels = nullptr.
#ifndef TFDET_KERNELS_ROI_ALIGN_CPU_H_
#define TFDET_KERNELS_ROI_ALIGN_CPU_H_

#include <math.h>

#include <cstdint>

#include "kernels/parallel.h"

#if defined(__CUDACC__)
#define TFDET_HOST_DEVICE __host__ __device__
#else
#define TFDET_HOST_DEVICE
#endif

namespace tfdet {

// Upper bound of the adaptive (sampling_ratio = 0) grid per axis, so that a
// huge or degenerate RoI cannot make the kernels loop for ever.
constexpr int kRoiAlignMaxAdaptiveGrid = 512;

struct RoiAlignAttrs {
  int pooled_height = 7;
  int pooled_width = 7;
  int sampling_ratio = 2;  // 0 = adaptive
  bool aligned = false;
};

// Where a RoI's bins and samples lie on its feature map.
struct RoiGeometry {
  float start_y, start_x;  // top-left corner in feature-map pixels
  float bin_h, bin_w;      // bin size in feature-map pixels
  int grid_h, grid_w;      // samples per bin along each axis (>= 0)
  bool valid;              // false: all-zero output, no gradient
};

// False for NaN and +-Inf (inf - inf is NaN); works the same on host and device.
TFDET_HOST_DEVICE inline bool RoiAlignIsFinite(float v) { return v - v == 0.f; }

TFDET_HOST_DEVICE inline int RoiAlignGridSize(float roi_size, int pooled, int sampling_ratio) {
  if (sampling_ratio > 0) return sampling_ratio;
  float g = ceilf(roi_size / static_cast<float>(pooled));
  if (!(g > 0.f)) return 0;  // also catches NaN
  return g > static_cast<float>(kRoiAlignMaxAdaptiveGrid) ? kRoiAlignMaxAdaptiveGrid
                                                          : static_cast<int>(g);
}

// roi: 4 floats (x1, y1, x2, y2) in input-image pixels.
TFDET_HOST_DEVICE inline RoiGeometry ComputeRoiGeometry(const float* roi, float spatial_scale,
                                                        const RoiAlignAttrs& attrs) {
  RoiGeometry g;
  const float x1 = roi[0], y1 = roi[1], x2 = roi[2], y2 = roi[3];
  g.valid = RoiAlignIsFinite(x1) && RoiAlignIsFinite(y1) && RoiAlignIsFinite(x2) &&
            RoiAlignIsFinite(y2);
  const float offset = attrs.aligned ? 0.5f : 0.f;
  g.start_x = x1 * spatial_scale - offset;
  g.start_y = y1 * spatial_scale - offset;
  float roi_w = x2 * spatial_scale - offset - g.start_x;
  float roi_h = y2 * spatial_scale - offset - g.start_y;
  if (!attrs.aligned) {
    roi_w = roi_w > 1.f ? roi_w : 1.f;
    roi_h = roi_h > 1.f ? roi_h : 1.f;
  }
  g.bin_h = roi_h / static_cast<float>(attrs.pooled_height);
  g.bin_w = roi_w / static_cast<float>(attrs.pooled_width);
  g.grid_h = g.valid ? RoiAlignGridSize(roi_h, attrs.pooled_height, attrs.sampling_ratio) : 0;
  g.grid_w = g.valid ? RoiAlignGridSize(roi_w, attrs.pooled_width, attrs.sampling_ratio) : 0;
  return g;
}

// Coordinate of sample `s` (of `grid`) in bin `bin` along one axis.
TFDET_HOST_DEVICE inline float RoiSampleCoord(float start, float bin_size, int bin, int s,
                                              int grid) {
  return start + bin * bin_size + (s + 0.5f) * bin_size / static_cast<float>(grid);
}

// One axis of a bilinear sample: rows (or columns) `low`, `high` and their
// weights; both weights are 0 when the sample falls outside [-1, size].
struct AxisInterp {
  int low, high;
  float w_low, w_high;
};

TFDET_HOST_DEVICE inline AxisInterp InterpAxis(float v, int size) {
  AxisInterp a;
  if (!(v >= -1.f && v <= static_cast<float>(size)) || size <= 0) {  // NaN is outside too
    a.low = a.high = 0;
    a.w_low = a.w_high = 0.f;
    return a;
  }
  if (v <= 0.f) v = 0.f;
  a.low = static_cast<int>(v);
  if (a.low >= size - 1) {
    a.low = a.high = size - 1;
    v = static_cast<float>(a.low);
  } else {
    a.high = a.low + 1;
  }
  const float l = v - static_cast<float>(a.low);
  a.w_low = 1.f - l;
  a.w_high = l;
  return a;
}

// One feature map of a pyramid (or the only one). Sizes: [batch, height,
// width, channels] with batch and channels common to all levels.
struct RoiAlignLevelCpu {
  const float* data;  // forward input; unused by the backward pass
  float* grad;        // backward output; unused by the forward pass
  int height;
  int width;
  float spatial_scale;
};

// Forward.
//   levels:        [num_levels], each data [batch, height, width, channels]
//   rois:          [num_rois, 4] (x1, y1, x2, y2)
//   batch_indices: [num_rois]
//   roi_levels:    [num_rois] in [0, num_levels), or nullptr (all level 0)
//   output:        [num_rois, pooled_height, pooled_width, channels]
void RoiAlignForwardCpu(const RoiAlignLevelCpu* levels, int num_levels, int batch, int channels,
                        const float* rois, const int32_t* batch_indices,
                        const int32_t* roi_levels, int64_t num_rois, const RoiAlignAttrs& attrs,
                        float* output, const ParallelFor& parallel_for);

// Backward: overwrites every levels[l].grad ([batch, height, width,
// channels]) with d(loss)/d(features) given
//   grads: [num_rois, pooled_height, pooled_width, channels].
// Race-free: each work unit writes its own (level, image, band of rows,
// channel block) slice of the gradients.
void RoiAlignBackwardCpu(const RoiAlignLevelCpu* levels, int num_levels, int batch, int channels,
                         const float* grads, const float* rois, const int32_t* batch_indices,
                         const int32_t* roi_levels, int64_t num_rois, const RoiAlignAttrs& attrs,
                         const ParallelFor& parallel_for);

}  // namespace tfdet

#endif  // TFDET_KERNELS_ROI_ALIGN_CPU_H_
