// RoIAlign CPU backward. See roi_align_cpu.h for the semantics and
// roi_align_cpu.cc for the forward, whose transpose this is, arranged for
// the cache (adding four scattered corners per sample into gradient maps
// that had just been zeroed whole, and so had left the cache, spent most of
// its time waiting for memory):
// * per row of bins, the bins' gradients are first spread over the RoI's
//   distinct columns in a small buffer, which is then added to each feature
//   row that the bin row reads (its samples' rows, merged where they
//   coincide), in one sweep of increasing addresses per row;
// * a work unit is (level, image, band of rows, 64-channel block): it zeroes
//   its slice of the gradients, which fits in a core's L2 cache, and then
//   adds every RoI over it, so the adds hit the cache.
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

// Gradient bytes of one work unit's band of rows (for one channel block).
constexpr int64_t kBandBytes = 256 << 10;

// A RoI's x samples in compact form. CompactColumns rewrites each sample's
// low / high column into an index into `cols`, the distinct columns that the
// samples read, in the order first met (increasing unless the RoI is
// mirrored; a repeat that is not adjacent is listed twice, which is still
// right); returns how many there are. Samples outside the map (both
// weights 0) are left as they are, and skipped by the kernels.
int CompactColumns(AxisInterp* xs, int n, int* cols) {
  int count = 0;
  for (int k = 0; k < n; ++k) {
    AxisInterp& x = xs[k];
    if (x.w_low == 0.f && x.w_high == 0.f) continue;
    if (count == 0 || cols[count - 1] != x.low) cols[count++] = x.low;
    const int low = count - 1;
    if (cols[count - 1] != x.high) cols[count++] = x.high;
    x.low = low;
    x.high = count - 1;
  }
  return count;
}

// The feature rows that one row of bins reads, with their total weight: the
// grid_h samples' (low, w_low) and (high, w_high) pairs, a row met again
// right after itself merged into one entry, zero weights dropped. Returns
// the number of entries written to rows / weights (at most 2 * grid_h).
int MergeRows(const AxisInterp* ys, int grid_h, int* rows, float* weights) {
  int count = 0;
  auto add = [&](int row, float w) {
    if (w == 0.f) return;
    if (count > 0 && rows[count - 1] == row) {
      weights[count - 1] += w;
    } else {
      rows[count] = row;
      weights[count++] = w;
    }
  };
  for (int iy = 0; iy < grid_h; ++iy) {
    add(ys[iy].low, ys[iy].w_low);
    add(ys[iy].high, ys[iy].w_high);
  }
  return count;
}

// Every RoI's geometry and sample tables, computed once for all the
// backward's work units.
struct RoiTables {
  std::vector<int> level;                 // -1: skipped (bad level or image, invalid, empty grid)
  std::vector<RoiGeometry> geo;
  std::vector<int64_t> y_start, x_start;  // RoI r's samples: ys[y_start[r]..], xs[x_start[r]..]
  std::vector<AxisInterp> ys, xs;         // xs in compact form (CompactColumns)
  std::vector<int> cols, ncols;           // RoI r's columns: cols[2 * x_start[r]..], ncols[r]
  std::vector<int> row_lo, row_hi;        // the feature rows RoI r reads: [row_lo, row_hi]
  std::vector<int64_t> group_start;       // image b, level l: order[group_start[g]..[g + 1])
  std::vector<int64_t> order;             // the used RoIs by image, then level (g = b * levels + l)
  int max_ncols = 0, max_grid_h = 0;
  int64_t samples = 0;                    // bilinear samples of all used RoIs
};

void BuildTables(const RoiAlignLevelCpu* levels, int num_levels, int batch, const float* rois,
                 const int32_t* batch_indices, const int32_t* roi_levels, int64_t num_rois,
                 const RoiAlignAttrs& attrs, const ParallelFor& parallel_for, RoiTables* t) {
  const int ph = attrs.pooled_height, pw = attrs.pooled_width;
  t->level.assign(num_rois, -1);
  t->geo.assign(num_rois, RoiGeometry{});
  t->y_start.assign(num_rois + 1, 0);
  t->x_start.assign(num_rois + 1, 0);
  t->ncols.assign(num_rois, 0);
  // Counting sort of the used RoIs by (image, level).
  std::vector<int64_t> key_start(static_cast<size_t>(batch) * num_levels + 1, 0);
  for (int64_t r = 0; r < num_rois; ++r) {
    int level = RoiLevel(r, batch_indices, roi_levels, num_levels, batch);
    if (level >= 0) {
      t->geo[r] = ComputeRoiGeometry(rois + 4 * r, levels[level].spatial_scale, attrs);
      if (!t->geo[r].valid || t->geo[r].grid_h == 0 || t->geo[r].grid_w == 0) level = -1;
    }
    t->level[r] = level;
    const bool used = level >= 0;
    const RoiGeometry& g = t->geo[r];
    t->y_start[r + 1] = t->y_start[r] + (used ? static_cast<int64_t>(ph) * g.grid_h : 0);
    t->x_start[r + 1] = t->x_start[r] + (used ? static_cast<int64_t>(pw) * g.grid_w : 0);
    if (used) {
      ++key_start[static_cast<int64_t>(batch_indices[r]) * num_levels + level + 1];
      t->samples += static_cast<int64_t>(ph) * pw * g.grid_h * g.grid_w;
      t->max_ncols = std::max<int64_t>(t->max_ncols, 2 * static_cast<int64_t>(pw) * g.grid_w);
      t->max_grid_h = std::max(t->max_grid_h, g.grid_h);
    }
  }
  for (size_t k = 1; k < key_start.size(); ++k) key_start[k] += key_start[k - 1];
  t->order.resize(key_start.back());
  {
    std::vector<int64_t> fill(key_start.begin(), key_start.end() - 1);
    for (int64_t r = 0; r < num_rois; ++r) {
      if (t->level[r] >= 0) {
        t->order[fill[static_cast<int64_t>(batch_indices[r]) * num_levels + t->level[r]]++] = r;
      }
    }
  }
  t->group_start = std::move(key_start);
  t->row_lo.assign(num_rois, 0);
  t->row_hi.assign(num_rois, -1);

  t->ys.resize(t->y_start[num_rois]);
  t->xs.resize(t->x_start[num_rois]);
  t->cols.resize(2 * t->x_start[num_rois]);
  parallel_for(num_rois, 20 * (ph * 2 + pw * 2) + 50, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      if (t->level[r] < 0) continue;
      const RoiAlignLevelCpu& lv = levels[t->level[r]];
      const RoiGeometry& g = t->geo[r];
      const AxisInterp* ys = t->ys.data() + t->y_start[r];
      FillAxis(g.start_y, g.bin_h, ph, g.grid_h, lv.height, t->ys.data() + t->y_start[r]);
      int lo = lv.height, hi = -1;
      for (int64_t k = 0; k < static_cast<int64_t>(ph) * g.grid_h; ++k) {
        if (ys[k].w_low != 0.f) lo = std::min(lo, ys[k].low), hi = std::max(hi, ys[k].low);
        if (ys[k].w_high != 0.f) lo = std::min(lo, ys[k].high), hi = std::max(hi, ys[k].high);
      }
      t->row_lo[r] = lo;
      t->row_hi[r] = hi;
      FillAxis(g.start_x, g.bin_w, pw, g.grid_w, lv.width, t->xs.data() + t->x_start[r]);
      t->ncols[r] = CompactColumns(t->xs.data() + t->x_start[r],
                                   static_cast<int>(t->x_start[r + 1] - t->x_start[r]),
                                   t->cols.data() + 2 * t->x_start[r]);
    }
  });
}

// One RoI's sample tables and scratch, as the backward's kernel sees them.
struct RoiView {
  const AxisInterp* ys;  // ph * grid_h
  const AxisInterp* xs;  // pw * grid_w, compact
  const int* cols;
  int ncols, grid_h, grid_w, ph, pw;
  float inv_count;       // 1 / samples per bin
  int* rows;             // scratch: 2 * grid_h
  float* weights;        // scratch: 2 * grid_h
  float* scratch;        // scratch: ncols * kChannelBlock
};

// The gradient of one RoI for channels [0, nc) of `image` (its level's
// gradient map of one image, offset to the block's first channel): adds
// grads[bin][c] / count times each sample's bilinear weights. `grads` points
// at the RoI's [ph, pw, channels] upstream gradient, offset likewise. Only
// rows [y0, y1) (the work unit's band) are written. Per row of bins, the
// bins' gradients are spread over the compact columns in tmp, then tmp is
// added to each feature row the bin row reads, with its weight.
template <int kBlock>
inline __attribute__((always_inline)) void ScatterRoiImpl(const float* grads, int channels,
                                                          int nc, float* image,
                                                          int64_t row_stride, int y0, int y1,
                                                          const RoiView& v) {
  const int n = kBlock > 0 ? kBlock : nc;
  float* tmp = v.scratch;
  if (v.ncols == 0) return;
  for (int i = 0; i < v.ph; ++i) {
    const int num_rows = MergeRows(v.ys + static_cast<int64_t>(i) * v.grid_h, v.grid_h, v.rows,
                                   v.weights);
    bool in_band = false;
    for (int m = 0; m < num_rows; ++m) in_band |= v.rows[m] >= y0 && v.rows[m] < y1;
    if (!in_band) continue;
    for (int k = 0; k < v.ncols; ++k) {
      float* __restrict t = tmp + static_cast<int64_t>(k) * kChannelBlock;
      for (int c = 0; c < n; ++c) t[c] = 0.f;
    }
    for (int j = 0; j < v.pw; ++j) {
      const float* __restrict gin = grads + (static_cast<int64_t>(i) * v.pw + j) * channels;
      for (int ix = 0; ix < v.grid_w; ++ix) {
        const AxisInterp& x = v.xs[j * v.grid_w + ix];
        if (x.w_low == 0.f && x.w_high == 0.f) continue;
        const float wl = x.w_low * v.inv_count, wh = x.w_high * v.inv_count;
        // low and high coincide at the last column: one at a time.
        float* __restrict tl = tmp + static_cast<int64_t>(x.low) * kChannelBlock;
        for (int c = 0; c < n; ++c) tl[c] += wl * gin[c];
        float* __restrict th = tmp + static_cast<int64_t>(x.high) * kChannelBlock;
        for (int c = 0; c < n; ++c) th[c] += wh * gin[c];
      }
    }
    for (int m = 0; m < num_rows; ++m) {
      if (v.rows[m] < y0 || v.rows[m] >= y1) continue;
      float* row = image + static_cast<int64_t>(v.rows[m]) * row_stride;
      const float w = v.weights[m];
      for (int k = 0; k < v.ncols; ++k) {
        float* __restrict p = row + static_cast<int64_t>(v.cols[k]) * channels;
        const float* __restrict t = tmp + static_cast<int64_t>(k) * kChannelBlock;
        for (int c = 0; c < n; ++c) p[c] += w * t[c];
      }
    }
  }
}

// ScatterRoiImpl for a full block and for a partial one, each compiled per ISA.
TFDET_CPU_CLONES void ScatterRoiFullBlock(const float* grads, int channels, float* image,
                                          int64_t row_stride, int y0, int y1, const RoiView& v) {
  ScatterRoiImpl<kChannelBlock>(grads, channels, kChannelBlock, image, row_stride, y0, y1, v);
}

TFDET_CPU_CLONES void ScatterRoiPartialBlock(const float* grads, int channels, int nc,
                                             float* image, int64_t row_stride, int y0, int y1,
                                             const RoiView& v) {
  ScatterRoiImpl<0>(grads, channels, nc, image, row_stride, y0, y1, v);
}

// Zeroes channels [0, nc) of `pixels` pixels `channels` apart. With nc a
// compile-time 64 the stores are inlined (a memset call per pixel, which is
// what a loop of runtime length compiles to, cost as much as the stores).
template <int kBlock>
inline __attribute__((always_inline)) void ZeroBlockImpl(float* data, int64_t pixels,
                                                         int channels, int nc) {
  const int n = kBlock > 0 ? kBlock : nc;
  for (int64_t p = 0; p < pixels; ++p) {
    float* __restrict d = data + p * channels;
    for (int c = 0; c < n; ++c) d[c] = 0.f;
  }
}

TFDET_CPU_CLONES void ZeroBlock(float* data, int64_t pixels, int channels, int nc) {
  if (nc == channels) {
    std::memset(data, 0, sizeof(float) * pixels * channels);
  } else if (nc == kChannelBlock) {
    ZeroBlockImpl<kChannelBlock>(data, pixels, channels, nc);
  } else {
    ZeroBlockImpl<0>(data, pixels, channels, nc);
  }
}

// RoI r's view of the tables, with the caller's scratch.
RoiView ViewOf(const RoiTables& t, int64_t r, const RoiAlignAttrs& attrs, int* rows,
               float* weights, float* scratch) {
  const RoiGeometry& g = t.geo[r];
  return RoiView{t.ys.data() + t.y_start[r], t.xs.data() + t.x_start[r],
                 t.cols.data() + 2 * t.x_start[r], t.ncols[r], g.grid_h, g.grid_w,
                 attrs.pooled_height, attrs.pooled_width,
                 1.f / static_cast<float>(g.grid_h * g.grid_w), rows, weights, scratch};
}

}  // namespace

void RoiAlignBackwardCpu(const RoiAlignLevelCpu* levels, int num_levels, int batch, int channels,
                         const float* grads, const float* rois, const int32_t* batch_indices,
                         const int32_t* roi_levels, int64_t num_rois, const RoiAlignAttrs& attrs,
                         const ParallelFor& parallel_for) {
  const int ph = attrs.pooled_height, pw = attrs.pooled_width;
  RoiTables t;
  BuildTables(levels, num_levels, batch, rois, batch_indices, roi_levels, num_rois, attrs,
              parallel_for, &t);

  // Work unit = (level, image, band of rows, channel block): it zeroes its
  // slice of the gradients and then adds every RoI's samples that fall in
  // it. No two units write the same element, and a band is sized to stay in
  // a core's L2 cache while the RoIs over it add to it (where zeroing the
  // whole maps first and scattering after missed the cache on most adds).
  const int block = std::max(1, std::min(channels, kChannelBlock));
  const int num_blocks = (channels + block - 1) / block;
  struct Band {
    int level, image, y0, y1;
  };
  std::vector<Band> bands;
  for (int l = 0; l < num_levels; ++l) {
    const int64_t row_bytes =
        std::max<int64_t>(1, static_cast<int64_t>(levels[l].width) * block * sizeof(float));
    const int rows = static_cast<int>(
        std::max<int64_t>(1, std::min<int64_t>(levels[l].height, kBandBytes / row_bytes)));
    for (int b = 0; b < batch; ++b) {
      for (int y0 = 0; y0 < levels[l].height; y0 += rows) {
        bands.push_back(Band{l, b, y0, std::min(levels[l].height, y0 + rows)});
      }
    }
  }
  if (bands.empty()) return;
  // The units' work varies by far (a band of P5 meets many more RoI rows than
  // one of P2), and a thread pool hands out contiguous ranges of equal-cost
  // units. So the units, in order (neighbours share RoIs and tables), are
  // cut into tasks of about equal estimated work: per band, its zeroing plus
  // each RoI's feature rows in it times the RoI's columns, twice (about two
  // rows of bins read each feature row) and a row of bins' x spreading.
  std::vector<int64_t> work_before(bands.size() + 1, 0);  // of bands [0, i)
  for (size_t i = 0; i < bands.size(); ++i) {
    const Band& band = bands[i];
    int64_t work = static_cast<int64_t>(band.y1 - band.y0) * levels[band.level].width;
    const int64_t group = static_cast<int64_t>(band.image) * num_levels + band.level;
    for (int64_t k = t.group_start[group]; k < t.group_start[group + 1]; ++k) {
      const int64_t r = t.order[k];
      const int lo = std::max(t.row_lo[r], band.y0), hi = std::min(t.row_hi[r], band.y1 - 1);
      if (hi >= lo) work += (hi - lo + 1) * (2 * static_cast<int64_t>(t.ncols[r]) + 2 * pw);
    }
    work_before[i + 1] = work_before[i] + work;
  }
  const int64_t total_work = std::max<int64_t>(1, work_before.back());
  constexpr int64_t kTasks = 64;
  const int64_t num_tasks = std::min<int64_t>(kTasks, static_cast<int64_t>(bands.size()));
  std::vector<int64_t> task_start(num_tasks + 1, static_cast<int64_t>(bands.size()));
  task_start[0] = 0;
  for (int64_t task = 1, i = 0; task < num_tasks; ++task) {
    const int64_t target = total_work * task / num_tasks;
    while (i < static_cast<int64_t>(bands.size()) && work_before[i + 1] <= target) ++i;
    task_start[task] = std::max(task_start[task - 1], i);
  }
  // Cost per task for the thread pool (about cycles): a unit of work is one
  // pixel's add or store per channel block, ~8 cycles.
  const int64_t cost = total_work / num_tasks * num_blocks * 8 + 1000;
  parallel_for(num_tasks, cost, [&](int64_t task_begin, int64_t task_end) {
    const int64_t begin = task_start[task_begin] * num_blocks;
    const int64_t end = task_start[task_end] * num_blocks;
    std::vector<int> rows(2 * static_cast<size_t>(t.max_grid_h));
    std::vector<float> weights(rows.size());
    std::vector<float> tmp(static_cast<size_t>(t.max_ncols) * kChannelBlock);
    for (int64_t unit = begin; unit < end; ++unit) {
      const Band& band = bands[unit / num_blocks];
      const int c0 = static_cast<int>(unit % num_blocks) * block;
      const int nc = std::min(block, channels - c0);
      const RoiAlignLevelCpu& lv = levels[band.level];
      const int64_t row_stride = static_cast<int64_t>(lv.width) * channels;
      float* image = lv.grad + static_cast<int64_t>(band.image) * lv.height * row_stride + c0;
      ZeroBlock(image + band.y0 * row_stride,
                static_cast<int64_t>(band.y1 - band.y0) * lv.width, channels, nc);
      const int64_t group = static_cast<int64_t>(band.image) * num_levels + band.level;
      for (int64_t k = t.group_start[group]; k < t.group_start[group + 1]; ++k) {
        const int64_t r = t.order[k];
        if (t.row_hi[r] < band.y0 || t.row_lo[r] >= band.y1) continue;
        const float* roi_grads = grads + r * ph * static_cast<int64_t>(pw) * channels + c0;
        const RoiView v = ViewOf(t, r, attrs, rows.data(), weights.data(), tmp.data());
        if (nc == kChannelBlock) {
          ScatterRoiFullBlock(roi_grads, channels, image, row_stride, band.y0, band.y1, v);
        } else {
          ScatterRoiPartialBlock(roi_grads, channels, nc, image, row_stride, band.y0, band.y1,
                                 v);
        }
      }
    }
  });
}

}  // namespace tfdet
