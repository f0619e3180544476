// RoIAlign CPU kernels. See roi_align_cpu.h for the semantics.
//
// Bilinear weights are separable: a sample's four corner weights are
// products of one weight pair along y and one along x, and a sample outside
// [-1, size] on either axis has zero weight. So the kernels precompute, per
// RoI, the (row, weight) pairs of every y sample and the (column, weight)
// pairs of every x sample once, and reuse them across all channels, which
// are the contiguous inner loop of NHWC.
#include "kernels/roi_align_cpu.h"

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

namespace tfdet {
namespace {

// Fills interp[bin * grid + s] for `bins` bins of `grid` samples each.
void FillAxis(float start, float bin_size, int bins, int grid, int size, AxisInterp* interp) {
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

int ApproxGrid(int sampling_ratio) { return sampling_ratio > 0 ? sampling_ratio : 2; }

// The hot loops below are compiled for AVX-512, AVX2+FMA and the baseline,
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

// One row of bins of one RoI: out[j * channels + c] (zeroed by the caller)
// += the grid_h x grid_w samples of bin (i, j), then scaled by 1 / count.
// ys: the grid_h samples of this row; xs: pw * grid_w samples.
TFDET_CPU_CLONES void PoolRow(const float* image, int64_t row_stride, int channels,
                              const AxisInterp* ys, int grid_h, const AxisInterp* xs, int grid_w,
                              int pw, float inv_count, float* out) {
  for (int iy = 0; iy < grid_h; ++iy) {
    const AxisInterp& y = ys[iy];
    if (y.w_low == 0.f && y.w_high == 0.f) continue;
    const float* row_low = image + static_cast<int64_t>(y.low) * row_stride;
    const float* row_high = image + static_cast<int64_t>(y.high) * row_stride;
    for (int j = 0; j < pw; ++j) {
      float* __restrict bin = out + static_cast<int64_t>(j) * channels;
      for (int ix = 0; ix < grid_w; ++ix) {
        const AxisInterp& x = xs[j * grid_w + ix];
        if (x.w_low == 0.f && x.w_high == 0.f) continue;
        const int64_t xl = static_cast<int64_t>(x.low) * channels;
        const int64_t xh = static_cast<int64_t>(x.high) * channels;
        const float w1 = y.w_low * x.w_low, w2 = y.w_low * x.w_high;
        const float w3 = y.w_high * x.w_low, w4 = y.w_high * x.w_high;
        const float* __restrict p1 = row_low + xl;
        const float* __restrict p2 = row_low + xh;
        const float* __restrict p3 = row_high + xl;
        const float* __restrict p4 = row_high + xh;
        for (int c = 0; c < channels; ++c) {
          bin[c] += w1 * p1[c] + w2 * p2[c] + w3 * p3[c] + w4 * p4[c];
        }
      }
    }
  }
  const int64_t n = static_cast<int64_t>(pw) * channels;
  for (int64_t k = 0; k < n; ++k) out[k] *= inv_count;
}

constexpr int kScatterBlock = 64;  // channels per backward work unit

// The gradient of one RoI for channels [0, nc) of `image` (its level's
// gradient map of one image, offset to the block's first channel): adds
// grads[bin][c] / count times each sample's bilinear weights. `grads` points
// at the RoI's [ph, pw, channels] upstream gradient, offset likewise.
template <int kBlock>
inline __attribute__((always_inline)) void ScatterRoiImpl(
    const float* grads, int channels, int nc, float* image, int64_t row_stride,
    const AxisInterp* ys, int grid_h, const AxisInterp* xs, int grid_w, int ph, int pw,
    float inv_count) {
  // A compile-time width (the usual full block) lets the compiler unroll the
  // channel loops into whole vectors.
  const int n = kBlock > 0 ? kBlock : nc;
  float scaled[kScatterBlock];
  for (int i = 0; i < ph; ++i) {
    for (int j = 0; j < pw; ++j) {
      const float* gin = grads + (static_cast<int64_t>(i) * pw + j) * channels;
      for (int c = 0; c < n; ++c) scaled[c] = gin[c] * inv_count;
      for (int iy = 0; iy < grid_h; ++iy) {
        const AxisInterp& y = ys[i * grid_h + iy];
        if (y.w_low == 0.f && y.w_high == 0.f) continue;
        float* row_low = image + static_cast<int64_t>(y.low) * row_stride;
        float* row_high = image + static_cast<int64_t>(y.high) * row_stride;
        for (int ix = 0; ix < grid_w; ++ix) {
          const AxisInterp& x = xs[j * grid_w + ix];
          if (x.w_low == 0.f && x.w_high == 0.f) continue;
          const int64_t xl = static_cast<int64_t>(x.low) * channels;
          const int64_t xh = static_cast<int64_t>(x.high) * channels;
          const float w1 = y.w_low * x.w_low, w2 = y.w_low * x.w_high;
          const float w3 = y.w_high * x.w_low, w4 = y.w_high * x.w_high;
          // The four corners may coincide (clamped at the last row or column):
          // one at a time, so each add sees the previous one.
          for (int c = 0; c < n; ++c) row_low[xl + c] += w1 * scaled[c];
          for (int c = 0; c < n; ++c) row_low[xh + c] += w2 * scaled[c];
          for (int c = 0; c < n; ++c) row_high[xl + c] += w3 * scaled[c];
          for (int c = 0; c < n; ++c) row_high[xh + c] += w4 * scaled[c];
        }
      }
    }
  }
}

// ScatterRoiImpl for a full block and for a partial one, each compiled per ISA.
TFDET_CPU_CLONES void ScatterRoiFullBlock(const float* grads, int channels, float* image,
                                          int64_t row_stride, const AxisInterp* ys, int grid_h,
                                          const AxisInterp* xs, int grid_w, int ph, int pw,
                                          float inv_count) {
  ScatterRoiImpl<kScatterBlock>(grads, channels, kScatterBlock, image, row_stride, ys, grid_h, xs,
                                grid_w, ph, pw, inv_count);
}

TFDET_CPU_CLONES void ScatterRoiPartialBlock(const float* grads, int channels, int nc,
                                             float* image, int64_t row_stride,
                                             const AxisInterp* ys, int grid_h,
                                             const AxisInterp* xs, int grid_w, int ph, int pw,
                                             float inv_count) {
  ScatterRoiImpl<0>(grads, channels, nc, image, row_stride, ys, grid_h, xs, grid_w, ph, pw,
                    inv_count);
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
      std::memset(out, 0, sizeof(float) * row_size);
      if (r != cached_roi) {
        cached_roi = r;
        level = RoiLevel(r, batch_indices, roi_levels, num_levels, batch);
        if (level < 0) continue;
        const RoiAlignLevelCpu& lv = levels[level];
        geo = ComputeRoiGeometry(rois + 4 * r, lv.spatial_scale, attrs);
        ys.resize(static_cast<size_t>(ph) * geo.grid_h);
        xs.resize(static_cast<size_t>(pw) * geo.grid_w);
        FillAxis(geo.start_y, geo.bin_h, ph, geo.grid_h, lv.height, ys.data());
        FillAxis(geo.start_x, geo.bin_w, pw, geo.grid_w, lv.width, xs.data());
      }
      if (level < 0 || !geo.valid || geo.grid_h == 0 || geo.grid_w == 0) continue;
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

void RoiAlignBackwardCpu(const RoiAlignLevelCpu* levels, int num_levels, int batch, int channels,
                         const float* grads, const float* rois, const int32_t* batch_indices,
                         const int32_t* roi_levels, int64_t num_rois, const RoiAlignAttrs& attrs,
                         const ParallelFor& parallel_for) {
  const int ph = attrs.pooled_height, pw = attrs.pooled_width;
  // Each RoI's level, geometry and sample tables, computed once for all the
  // channel blocks below. Skipped RoIs (bad level or image, non-finite, empty
  // grid) get level -1 and no table.
  std::vector<int> roi_level(num_rois);
  std::vector<RoiGeometry> geos(num_rois);
  std::vector<int64_t> y_start(num_rois + 1, 0), x_start(num_rois + 1, 0);
  // RoIs of each image, in order (image-major list with per-image offsets).
  std::vector<int64_t> image_start(batch + 1, 0);
  int64_t samples = 0;  // bilinear samples over all RoIs, for the cost estimate
  for (int64_t r = 0; r < num_rois; ++r) {
    int level = RoiLevel(r, batch_indices, roi_levels, num_levels, batch);
    if (level >= 0) {
      geos[r] = ComputeRoiGeometry(rois + 4 * r, levels[level].spatial_scale, attrs);
      if (!geos[r].valid || geos[r].grid_h == 0 || geos[r].grid_w == 0) level = -1;
    }
    roi_level[r] = level;
    const bool used = level >= 0;
    y_start[r + 1] = y_start[r] + (used ? static_cast<int64_t>(ph) * geos[r].grid_h : 0);
    x_start[r + 1] = x_start[r] + (used ? static_cast<int64_t>(pw) * geos[r].grid_w : 0);
    if (used) {
      ++image_start[batch_indices[r] + 1];
      samples += static_cast<int64_t>(ph) * pw * geos[r].grid_h * geos[r].grid_w;
    }
  }
  for (int b = 0; b < batch; ++b) image_start[b + 1] += image_start[b];
  std::vector<int64_t> image_rois(image_start[batch]);
  {
    std::vector<int64_t> fill(image_start.begin(), image_start.end() - 1);
    for (int64_t r = 0; r < num_rois; ++r) {
      if (roi_level[r] >= 0) image_rois[fill[batch_indices[r]]++] = r;
    }
  }
  std::vector<AxisInterp> ys(y_start[num_rois]), xs(x_start[num_rois]);
  parallel_for(num_rois, 20 * (ph * 2 + pw * 2) + 50, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      if (roi_level[r] < 0) continue;
      const RoiAlignLevelCpu& lv = levels[roi_level[r]];
      const RoiGeometry& geo = geos[r];
      FillAxis(geo.start_y, geo.bin_h, ph, geo.grid_h, lv.height, ys.data() + y_start[r]);
      FillAxis(geo.start_x, geo.bin_w, pw, geo.grid_w, lv.width, xs.data() + x_start[r]);
    }
  });

  // Zero the gradients first, in large contiguous pieces.
  constexpr int64_t kZeroChunk = 1 << 16;  // floats
  std::vector<std::pair<float*, int64_t>> chunks;
  for (int l = 0; l < num_levels; ++l) {
    const int64_t elements =
        static_cast<int64_t>(levels[l].height) * levels[l].width * batch * channels;
    for (int64_t k = 0; k < elements; k += kZeroChunk) {
      chunks.emplace_back(levels[l].grad + k, std::min(kZeroChunk, elements - k));
    }
  }
  parallel_for(static_cast<int64_t>(chunks.size()), kZeroChunk / 4,
               [&](int64_t begin, int64_t end) {
                 for (int64_t k = begin; k < end; ++k) {
                   std::memset(chunks[k].first, 0, sizeof(float) * chunks[k].second);
                 }
               });

  // Work unit = (channel block, image): each owns a disjoint slice of the
  // gradients, so no two workers write the same element, and the units of a
  // block have equal work whatever the split of the RoIs over the levels
  // (most pool from P2). Units are block-major, so a contiguous range of them
  // spans all images.
  const int block = std::max(1, std::min(channels, kScatterBlock));
  const int num_blocks = (channels + block - 1) / block;
  const int64_t num_units = static_cast<int64_t>(num_blocks) * batch;
  const int64_t cost = samples * block * 8 / std::max(1, batch) + 1000;
  parallel_for(num_units, cost, [&](int64_t begin, int64_t end) {
    for (int64_t unit = begin; unit < end; ++unit) {
      const int c0 = static_cast<int>(unit / batch) * block;
      const int b = static_cast<int>(unit % batch);
      const int nc = std::min(block, channels - c0);
      for (int64_t k = image_start[b]; k < image_start[b + 1]; ++k) {
        const int64_t r = image_rois[k];
        const RoiAlignLevelCpu& lv = levels[roi_level[r]];
        const RoiGeometry& geo = geos[r];
        const int64_t row_stride = static_cast<int64_t>(lv.width) * channels;
        float* image = lv.grad + static_cast<int64_t>(b) * lv.height * row_stride + c0;
        const float* roi_grads = grads + r * ph * static_cast<int64_t>(pw) * channels + c0;
        const float inv_count = 1.f / static_cast<float>(geo.grid_h * geo.grid_w);
        if (nc == kScatterBlock) {
          ScatterRoiFullBlock(roi_grads, channels, image, row_stride, ys.data() + y_start[r],
                              geo.grid_h, xs.data() + x_start[r], geo.grid_w, ph, pw, inv_count);
        } else {
          ScatterRoiPartialBlock(roi_grads, channels, nc, image, row_stride,
                                 ys.data() + y_start[r], geo.grid_h, xs.data() + x_start[r],
                                 geo.grid_w, ph, pw, inv_count);
        }
      }
    }
  });
}

}  // namespace tfdet
