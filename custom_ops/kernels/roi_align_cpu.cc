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
#include <vector>

namespace tfdet {
namespace {

// Fills interp[bin * grid + s] for `bins` bins of `grid` samples each.
void FillAxis(float start, float bin_size, int bins, int grid, int size,
              std::vector<AxisInterp>* interp) {
  interp->resize(static_cast<size_t>(bins) * grid);
  for (int b = 0; b < bins; ++b) {
    for (int s = 0; s < grid; ++s) {
      (*interp)[b * grid + s] = InterpAxis(RoiSampleCoord(start, bin_size, b, s, grid), size);
    }
  }
}

// out[c] += w * in[c] for c in [0, n).
inline void Axpy(float w, const float* __restrict in, float* __restrict out, int n) {
  for (int c = 0; c < n; ++c) out[c] += w * in[c];
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
        FillAxis(geo.start_y, geo.bin_h, ph, geo.grid_h, lv.height, &ys);
        FillAxis(geo.start_x, geo.bin_w, pw, geo.grid_w, lv.width, &xs);
      }
      if (level < 0 || !geo.valid || geo.grid_h == 0 || geo.grid_w == 0) continue;
      const RoiAlignLevelCpu& lv = levels[level];
      const float* image = lv.data + static_cast<int64_t>(batch_indices[r]) * lv.height *
                                         lv.width * channels;
      const float inv_count = 1.f / static_cast<float>(geo.grid_h * geo.grid_w);
      for (int iy = 0; iy < geo.grid_h; ++iy) {
        const AxisInterp& y = ys[i * geo.grid_h + iy];
        if (y.w_low == 0.f && y.w_high == 0.f) continue;
        const float* row_low = image + static_cast<int64_t>(y.low) * lv.width * channels;
        const float* row_high = image + static_cast<int64_t>(y.high) * lv.width * channels;
        for (int j = 0; j < pw; ++j) {
          float* bin = out + static_cast<int64_t>(j) * channels;
          for (int ix = 0; ix < geo.grid_w; ++ix) {
            const AxisInterp& x = xs[j * geo.grid_w + ix];
            if (x.w_low == 0.f && x.w_high == 0.f) continue;
            const int64_t xl = static_cast<int64_t>(x.low) * channels;
            const int64_t xh = static_cast<int64_t>(x.high) * channels;
            const float w1 = y.w_low * x.w_low, w2 = y.w_low * x.w_high;
            const float w3 = y.w_high * x.w_low, w4 = y.w_high * x.w_high;
            const float* p1 = row_low + xl;
            const float* p2 = row_low + xh;
            const float* p3 = row_high + xl;
            const float* p4 = row_high + xh;
            for (int c = 0; c < channels; ++c) {
              bin[c] += w1 * p1[c] + w2 * p2[c] + w3 * p3[c] + w4 * p4[c];
            }
          }
        }
      }
      for (int64_t k = 0; k < row_size; ++k) out[k] *= inv_count;
    }
  });
}

void RoiAlignBackwardCpu(const RoiAlignLevelCpu* levels, int num_levels, int batch, int channels,
                         const float* grads, const float* rois, const int32_t* batch_indices,
                         const int32_t* roi_levels, int64_t num_rois, const RoiAlignAttrs& attrs,
                         const ParallelFor& parallel_for) {
  const int ph = attrs.pooled_height, pw = attrs.pooled_width;
  // Bucket the RoIs by (level, image), keeping their order.
  const int64_t num_buckets = static_cast<int64_t>(num_levels) * batch;
  std::vector<int64_t> bucket_start(num_buckets + 1, 0);
  for (int64_t r = 0; r < num_rois; ++r) {
    const int level = RoiLevel(r, batch_indices, roi_levels, num_levels, batch);
    if (level >= 0) ++bucket_start[static_cast<int64_t>(level) * batch + batch_indices[r] + 1];
  }
  for (int64_t k = 0; k < num_buckets; ++k) bucket_start[k + 1] += bucket_start[k];
  std::vector<int64_t> bucket_rois(bucket_start[num_buckets]);
  {
    std::vector<int64_t> fill(bucket_start.begin(), bucket_start.end() - 1);
    for (int64_t r = 0; r < num_rois; ++r) {
      const int level = RoiLevel(r, batch_indices, roi_levels, num_levels, batch);
      if (level >= 0) bucket_rois[fill[static_cast<int64_t>(level) * batch + batch_indices[r]]++] = r;
    }
  }

  // Work unit = (level, image, channel block); each owns a disjoint slice of
  // the gradients, so no two workers write the same element.
  const int block = std::min(channels, 64) > 0 ? std::min(channels, 64) : 1;
  const int num_blocks = (channels + block - 1) / block;
  const int64_t num_units = num_buckets * num_blocks;
  const int g = ApproxGrid(attrs.sampling_ratio);
  const int64_t avg_rois = num_buckets > 0 ? bucket_start[num_buckets] / num_buckets + 1 : 1;
  const int64_t cost = avg_rois * ph * pw * g * g * block * 8 + 1000;
  parallel_for(num_units, cost, [&](int64_t begin, int64_t end) {
    std::vector<AxisInterp> ys, xs;
    std::vector<float> scaled(block);
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t bucket = unit / num_blocks;
      const int c0 = static_cast<int>(unit % num_blocks) * block;
      const int nc = std::min(block, channels - c0);
      const int level = static_cast<int>(bucket / batch);
      const int b = static_cast<int>(bucket % batch);
      const RoiAlignLevelCpu& lv = levels[level];
      const int64_t row_stride = static_cast<int64_t>(lv.width) * channels;
      float* image = lv.grad + static_cast<int64_t>(b) * lv.height * row_stride + c0;
      const int64_t pixels = static_cast<int64_t>(lv.height) * lv.width;
      for (int64_t p = 0; p < pixels; ++p) {
        std::memset(image + p * channels, 0, sizeof(float) * nc);
      }
      for (int64_t k = bucket_start[bucket]; k < bucket_start[bucket + 1]; ++k) {
        const int64_t r = bucket_rois[k];
        const RoiGeometry geo = ComputeRoiGeometry(rois + 4 * r, lv.spatial_scale, attrs);
        if (!geo.valid || geo.grid_h == 0 || geo.grid_w == 0) continue;
        FillAxis(geo.start_y, geo.bin_h, ph, geo.grid_h, lv.height, &ys);
        FillAxis(geo.start_x, geo.bin_w, pw, geo.grid_w, lv.width, &xs);
        const float inv_count = 1.f / static_cast<float>(geo.grid_h * geo.grid_w);
        for (int i = 0; i < ph; ++i) {
          for (int j = 0; j < pw; ++j) {
            const float* gin =
                grads + ((r * ph + i) * static_cast<int64_t>(pw) + j) * channels + c0;
            for (int c = 0; c < nc; ++c) scaled[c] = gin[c] * inv_count;
            for (int iy = 0; iy < geo.grid_h; ++iy) {
              const AxisInterp& y = ys[i * geo.grid_h + iy];
              if (y.w_low == 0.f && y.w_high == 0.f) continue;
              float* row_low = image + y.low * row_stride;
              float* row_high = image + y.high * row_stride;
              for (int ix = 0; ix < geo.grid_w; ++ix) {
                const AxisInterp& x = xs[j * geo.grid_w + ix];
                if (x.w_low == 0.f && x.w_high == 0.f) continue;
                const int64_t xl = static_cast<int64_t>(x.low) * channels;
                const int64_t xh = static_cast<int64_t>(x.high) * channels;
                Axpy(y.w_low * x.w_low, scaled.data(), row_low + xl, nc);
                Axpy(y.w_low * x.w_high, scaled.data(), row_low + xh, nc);
                Axpy(y.w_high * x.w_low, scaled.data(), row_high + xl, nc);
                Axpy(y.w_high * x.w_high, scaled.data(), row_high + xh, nc);
              }
            }
          }
        }
      }
    }
  });
}

}  // namespace tfdet
