// RoIAlign CPU forward. See roi_align_cpu.h for the semantics, and
// roi_align_cpu_backward.cc for the backward.
//
// Bilinear weights are separable: a sample's four corner weights are
// products of one weight pair along y and one along x, and a sample outside
// [-1, size] on either axis has zero weight. So the kernels precompute, per
// RoI, the (row, weight) pairs of every y sample and the (column, weight)
// pairs of every x sample once, and reuse them across all channels, which
// are the contiguous inner loop of NHWC.
//
// The forward pools one row of bins of one RoI per work unit, from each
// sample's four corners, 64 channels at a time with the sums in registers.
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/roi_align_cpu.h"
#include "kernels/roi_align_cpu_common.h"

namespace tfdet {
namespace {

using roi_align_cpu::FillAxis;
using roi_align_cpu::kChannelBlock;
using roi_align_cpu::RoiLevel;

int ApproxGrid(int sampling_ratio) { return sampling_ratio > 0 ? sampling_ratio : 2; }

// Channels [0, nc) of one bin: out[c] = the mean over the grid_h x grid_w
// samples (ys, xs: this bin's) of their bilinear interpolation, the sums in
// registers when nc is the compile-time block.
template <int kBlock>
inline __attribute__((always_inline)) void PoolBinImpl(const float* image, int64_t row_stride,
                                                       int channels, int nc,
                                                       const AxisInterp* ys, int grid_h,
                                                       const AxisInterp* xs, int grid_w,
                                                       float inv_count, float* out) {
  const int n = kBlock > 0 ? kBlock : nc;
  float sum[kChannelBlock];
  for (int c = 0; c < n; ++c) sum[c] = 0.f;
  for (int iy = 0; iy < grid_h; ++iy) {
    const AxisInterp& y = ys[iy];
    if (y.w_low == 0.f && y.w_high == 0.f) continue;
    const float* row_low = image + static_cast<int64_t>(y.low) * row_stride;
    const float* row_high = image + static_cast<int64_t>(y.high) * row_stride;
    for (int ix = 0; ix < grid_w; ++ix) {
      const AxisInterp& x = xs[ix];
      if (x.w_low == 0.f && x.w_high == 0.f) continue;
      const int64_t xl = static_cast<int64_t>(x.low) * channels;
      const int64_t xh = static_cast<int64_t>(x.high) * channels;
      const float w1 = y.w_low * x.w_low, w2 = y.w_low * x.w_high;
      const float w3 = y.w_high * x.w_low, w4 = y.w_high * x.w_high;
      const float* __restrict p1 = row_low + xl;
      const float* __restrict p2 = row_low + xh;
      const float* __restrict p3 = row_high + xl;
      const float* __restrict p4 = row_high + xh;
      for (int c = 0; c < n; ++c) sum[c] += w1 * p1[c] + w2 * p2[c] + w3 * p3[c] + w4 * p4[c];
    }
  }
  float* __restrict o = out;
  for (int c = 0; c < n; ++c) o[c] = sum[c] * inv_count;
}

// One row of bins of one RoI: out[j * channels + c] = the mean of bin (i, j)'s
// samples, 64 channels at a time. ys: the grid_h samples of this row; xs:
// pw * grid_w samples.
TFDET_CPU_CLONES void PoolRow(const float* image, int64_t row_stride, int channels,
                              const AxisInterp* ys, int grid_h, const AxisInterp* xs, int grid_w,
                              int pw, float inv_count, float* out) {
  for (int j = 0; j < pw; ++j) {
    for (int c0 = 0; c0 < channels; c0 += kChannelBlock) {
      const int nc = std::min(kChannelBlock, channels - c0);
      float* bin = out + static_cast<int64_t>(j) * channels + c0;
      if (nc == kChannelBlock) {
        PoolBinImpl<kChannelBlock>(image + c0, row_stride, channels, nc, ys, grid_h,
                                   xs + j * grid_w, grid_w, inv_count, bin);
      } else {
        PoolBinImpl<0>(image + c0, row_stride, channels, nc, ys, grid_h, xs + j * grid_w,
                       grid_w, inv_count, bin);
      }
    }
  }
}

}  // namespace

void RoiAlignForwardCpu(const RoiAlignLevelCpu* levels, int num_levels, int batch, int channels,
                        const float* rois, const int32_t* batch_indices,
                        const int32_t* roi_levels, int64_t num_rois, const RoiAlignAttrs& attrs,
                        float* output, const ParallelFor& parallel_for) {
  const int ph = attrs.pooled_height, pw = attrs.pooled_width;
  const int64_t row_size = static_cast<int64_t>(pw) * channels;  // one row of bins
  const int g = ApproxGrid(attrs.sampling_ratio);
  const int64_t cost = row_size * g * g * 8 + 200;
  // One work unit = one row of bins of one RoI.
  parallel_for(num_rois * ph, cost, [&](int64_t begin, int64_t end) {
    std::vector<AxisInterp> ys, xs;
    int64_t cached_roi = -1;
    RoiGeometry geo{};
    int level = -1;
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t r = unit / ph;
      const int i = static_cast<int>(unit % ph);
      float* out = output + unit * row_size;
      if (r != cached_roi) {
        cached_roi = r;
        level = RoiLevel(r, batch_indices, roi_levels, num_levels, batch);
        if (level < 0) {
          std::memset(out, 0, sizeof(float) * row_size);
          continue;
        }
        const RoiAlignLevelCpu& lv = levels[level];
        geo = ComputeRoiGeometry(rois + 4 * r, lv.spatial_scale, attrs);
        ys.resize(static_cast<size_t>(ph) * geo.grid_h);
        xs.resize(static_cast<size_t>(pw) * geo.grid_w);
        FillAxis(geo.start_y, geo.bin_h, ph, geo.grid_h, lv.height, ys.data());
        FillAxis(geo.start_x, geo.bin_w, pw, geo.grid_w, lv.width, xs.data());
      }
      if (level < 0 || !geo.valid || geo.grid_h == 0 || geo.grid_w == 0) {
        std::memset(out, 0, sizeof(float) * row_size);
        continue;
      }
      const RoiAlignLevelCpu& lv = levels[level];
      const float* image = lv.data + static_cast<int64_t>(batch_indices[r]) * lv.height *
                                         lv.width * channels;
      const float inv_count = 1.f / static_cast<float>(geo.grid_h * geo.grid_w);
      PoolRow(image, static_cast<int64_t>(lv.width) * channels, channels,
              ys.data() + static_cast<int64_t>(i) * geo.grid_h, geo.grid_h, xs.data(), geo.grid_w,
              pw, inv_count, out);
    }
  });
}

}  // namespace tfdet
