// CUDA launchers of proposal generation; the algorithm is described in
// proposals_cuda.h, the semantics in proposals_cpu.h.
#include "kernels/proposals_cuda.h"

#include <cub/cub.cuh>

#include <algorithm>
#include <cstdint>
#include <limits>

namespace tfdet {
namespace {

constexpr int kNmsBlock = 64;  // boxes per mask word
constexpr int kThreads = 256;
constexpr size_t kAlign = 256;

// Per-level data, passed to kernels by value.
struct LevelsParam {
  const float* scores[kProposalsCudaMaxLevels];
  const float* deltas[kProposalsCudaMaxLevels];
  const float* anchors[kProposalsCudaMaxLevels];
  int m[kProposalsCudaMaxLevels];     // anchors per image
  int off[kProposalsCudaMaxLevels];   // offset of the level in an image's scores
  int k[kProposalsCudaMaxLevels];     // pre-NMS candidates
  int post[kProposalsCudaMaxLevels];  // post-NMS maximum
  int num_levels;
  int total_m;  // sum of m
};

// Sizes of everything, computed the same way by the size query and launch.
struct Plan {
  int64_t batch = 0, segments = 0, total = 0;  // B, S = B * L, T = B * sum(m)
  int64_t k_max = 0, post_max = 0, words = 0;  // K, P, W = ceil(K / 64)
  int64_t collect_items = 0;                   // S * P
  size_t sort_temp = 0;                        // CUB temp storage (max over calls)
  size_t bytes = 0;                            // whole workspace
  // Byte offsets of the buffers in the workspace.
  size_t keys_in, keys_out, vals_in, vals_out, seg_begin, seg_end, cand_boxes, cand_scores,
      mask, removed, kept_boxes, kept_scores, ckeys, cvals_in, cvals_out, img_keys_in,
      img_keys_out, img_vals_out, img_begin, img_end, image_start, temp;
};

size_t Take(size_t* cursor, size_t bytes) {
  const size_t at = *cursor;
  *cursor += (bytes + kAlign - 1) / kAlign * kAlign;
  return at;
}

LevelsParam MakeLevels(const ProposalsConfig& cfg, int num_levels, const int64_t* m,
                       const ProposalsLevel* levels) {
  LevelsParam p = {};
  p.num_levels = num_levels;
  int64_t off = 0;
  for (int l = 0; l < num_levels; ++l) {
    if (levels != nullptr) {
      p.scores[l] = levels[l].scores;
      p.deltas[l] = levels[l].deltas;
      p.anchors[l] = levels[l].anchors;
    }
    p.m[l] = static_cast<int>(m[l]);
    p.off[l] = static_cast<int>(off);
    p.k[l] = static_cast<int>(ProposalsPreNmsCount(cfg, m[l]));
    p.post[l] = static_cast<int>(ProposalsPostNmsCount(cfg, m[l]));
    off += m[l];
  }
  p.total_m = static_cast<int>(off);
  return p;
}

cudaError_t MakePlan(const ProposalsConfig& cfg, int64_t batch, const LevelsParam& lv,
                     Plan* plan) {
  Plan& p = *plan;
  p.batch = batch;
  p.segments = batch * lv.num_levels;
  p.total = batch * lv.total_m;
  for (int l = 0; l < lv.num_levels; ++l) {
    p.k_max = std::max<int64_t>(p.k_max, lv.k[l]);
    p.post_max = std::max<int64_t>(p.post_max, lv.post[l]);
  }
  p.words = (p.k_max + kNmsBlock - 1) / kNmsBlock;
  p.collect_items = p.segments * p.post_max;
  if (p.total > std::numeric_limits<int>::max() ||
      p.segments * p.k_max > std::numeric_limits<int>::max() ||
      p.collect_items > std::numeric_limits<int>::max()) {
    return cudaErrorInvalidValue;
  }
  const int64_t c = std::min<int64_t>(cfg.collect_top_n, p.collect_items);
  // CUB temp storage sizes (queries only; no device work).
  size_t t0 = 0, t1 = 0, t2 = 0, t3 = 0;
  cudaError_t err;
  const float* fk = nullptr;
  float* fo = nullptr;
  const int* iv = nullptr;
  int* io = nullptr;
  const int* offs = nullptr;
  if (p.total > 0) {
    err = cub::DeviceSegmentedSort::StableSortPairsDescending(
        nullptr, t0, fk, fo, iv, io, p.total, p.segments, offs, offs);
    if (err != cudaSuccess) return err;
  }
  if (p.collect_items > 0) {
    if (cfg.collect_per_batch) {
      err = cub::DeviceRadixSort::SortPairsDescending(nullptr, t1, fk, fo, iv, io,
                                                      static_cast<int>(p.collect_items));
      if (err != cudaSuccess) return err;
      if (c > 0) {
        err = cub::DeviceRadixSort::SortPairs(nullptr, t2, iv, io, iv, io, static_cast<int>(c));
        if (err != cudaSuccess) return err;
      }
    } else {
      err = cub::DeviceSegmentedSort::StableSortPairsDescending(
          nullptr, t3, fk, fo, iv, io, p.collect_items, batch, offs, offs);
      if (err != cudaSuccess) return err;
    }
  }
  p.sort_temp = std::max(std::max(t0, t1), std::max(t2, t3));
  const size_t T = p.total, S = p.segments, K = p.k_max, W = p.words, CI = p.collect_items;
  size_t cur = 0;
  p.keys_in = Take(&cur, T * sizeof(float));
  p.keys_out = Take(&cur, T * sizeof(float));
  p.vals_in = Take(&cur, T * sizeof(int));
  p.vals_out = Take(&cur, T * sizeof(int));
  p.seg_begin = Take(&cur, S * sizeof(int));
  p.seg_end = Take(&cur, S * sizeof(int));
  p.cand_boxes = Take(&cur, S * K * 4 * sizeof(float));
  p.cand_scores = Take(&cur, S * K * sizeof(float));
  p.mask = Take(&cur, S * K * W * sizeof(uint64_t));
  p.removed = Take(&cur, S * W * sizeof(uint64_t));
  p.kept_boxes = Take(&cur, CI * 4 * sizeof(float));
  p.kept_scores = Take(&cur, CI * sizeof(float));
  p.ckeys = Take(&cur, CI * sizeof(float));
  p.cvals_in = Take(&cur, CI * sizeof(int));
  p.cvals_out = Take(&cur, CI * sizeof(int));
  p.img_keys_in = Take(&cur, CI * sizeof(int));
  p.img_keys_out = Take(&cur, CI * sizeof(int));
  p.img_vals_out = Take(&cur, CI * sizeof(int));
  p.img_begin = Take(&cur, batch * sizeof(int));
  p.img_end = Take(&cur, batch * sizeof(int));
  p.image_start = Take(&cur, batch * sizeof(int));
  p.temp = Take(&cur, p.sort_temp);
  p.bytes = cur;
  return cudaSuccess;
}

int Blocks(int64_t n) { return static_cast<int>((n + kThreads - 1) / kThreads); }

// Segment offsets of the score sort (S) and of the per-image collect (B).
__global__ void OffsetsKernel(LevelsParam lv, int batch, int post_max, int* seg_begin,
                              int* seg_end, int* img_begin, int* img_end) {
  const int s = blockIdx.x * blockDim.x + threadIdx.x;
  if (s < batch * lv.num_levels) {
    const int b = s / lv.num_levels, l = s % lv.num_levels;
    seg_begin[s] = b * lv.total_m + lv.off[l];
    seg_end[s] = seg_begin[s] + lv.m[l];
  }
  if (s < batch) {
    img_begin[s] = s * lv.num_levels * post_max;
    img_end[s] = (s + 1) * lv.num_levels * post_max;
  }
}

// Step 1: scores of all segments into one key array (-inf if not finite).
__global__ void GatherScoresKernel(LevelsParam lv, int total, float* keys, int* vals) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= total) return;
  const int b = t / lv.total_m, j = t % lv.total_m;
  int l = 0;
  while (l + 1 < lv.num_levels && j >= lv.off[l + 1]) ++l;
  const int i = j - lv.off[l];
  const float s = lv.scores[l][static_cast<int64_t>(b) * lv.m[l] + i];
  keys[t] = !isfinite(s) ? -INFINITY : (s == 0.f ? 0.f : s);
  vals[t] = i;
}

// Step 2: decode/clip/filter the top k_l of each segment.
__global__ void DecodeKernel(LevelsParam lv, ProposalsConfig cfg, int segments, int k_max,
                             const float* image_info, const int* seg_begin, const float* keys,
                             const int* vals, float* boxes, float* scores) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= static_cast<int64_t>(segments) * k_max) return;
  const int s = t / k_max, r = t % k_max;
  const int b = s / lv.num_levels, l = s % lv.num_levels;
  float* box = boxes + 4 * t;
  scores[t] = -INFINITY;
  for (int j = 0; j < 4; ++j) box[j] = 0.f;
  if (r >= lv.k[l]) return;
  const float key = keys[seg_begin[s] + r];
  if (!isfinite(key)) return;
  const int i = vals[seg_begin[s] + r];
  const float* info = image_info + 3 * b;
  const float* deltas = lv.deltas[l] + (static_cast<int64_t>(b) * lv.m[l] + i) * 4;
  if (ProposalsDecodeOne(lv.anchors[l] + 4 * static_cast<int64_t>(i), deltas, info[0], info[1],
                         info[2], cfg.min_size, cfg.legacy_plus_one, cfg.bbox_xform_clip, box)) {
    scores[t] = key;
  }
}

// Step 3: IoU bitmask, one 64x64 tile per block (torchvision's scheme).
__global__ void NmsMaskKernel(LevelsParam lv, int k_max, int words, float threshold, float off,
                              const float* boxes, uint64_t* mask) {
  const int s = blockIdx.z, row_block = blockIdx.y, col_block = blockIdx.x;
  if (col_block < row_block) return;
  const int n = lv.k[s % lv.num_levels];
  const int row0 = row_block * kNmsBlock, col0 = col_block * kNmsBlock;
  if (row0 >= n || col0 >= n) return;
  const int rows = min(n - row0, kNmsBlock), cols = min(n - col0, kNmsBlock);
  __shared__ float col_boxes[kNmsBlock * 4];
  const float* seg = boxes + static_cast<int64_t>(s) * k_max * 4;
  if (threadIdx.x < cols) {
    for (int j = 0; j < 4; ++j) {
      col_boxes[threadIdx.x * 4 + j] = seg[(col0 + threadIdx.x) * 4 + j];
    }
  }
  __syncthreads();
  if (threadIdx.x >= rows) return;
  const int i = row0 + threadIdx.x;
  const float* box = seg + 4 * i;
  uint64_t bits = 0;
  for (int j = (row_block == col_block ? threadIdx.x + 1 : 0); j < cols; ++j) {
    if (ProposalsSuppresses(ProposalsIou(box, col_boxes + 4 * j, off), threshold, off)) {
      bits |= uint64_t{1} << j;
    }
  }
  mask[(static_cast<int64_t>(s) * k_max + i) * words + col_block] = bits;
}

// Step 4: greedy scan of the mask, one block per segment.
__global__ void NmsScanKernel(LevelsParam lv, int k_max, int words, int post_max,
                              const float* boxes, const float* scores, const uint64_t* mask,
                              uint64_t* removed_all, float* kept_boxes, float* kept_scores) {
  const int s = blockIdx.x;
  const int l = s % lv.num_levels;
  const int n = lv.k[l], limit = lv.post[l];
  const int n_words = (n + kNmsBlock - 1) / kNmsBlock;
  const float* seg_boxes = boxes + static_cast<int64_t>(s) * k_max * 4;
  const float* seg_scores = scores + static_cast<int64_t>(s) * k_max;
  const uint64_t* seg_mask = mask + static_cast<int64_t>(s) * k_max * words;
  uint64_t* removed = removed_all + static_cast<int64_t>(s) * words;
  float* out_boxes = kept_boxes + static_cast<int64_t>(s) * post_max * 4;
  float* out_scores = kept_scores + static_cast<int64_t>(s) * post_max;
  for (int p = threadIdx.x; p < post_max; p += blockDim.x) {
    out_scores[p] = -INFINITY;
    for (int j = 0; j < 4; ++j) out_boxes[4 * p + j] = 0.f;
  }
  // Invalid candidates (and positions >= n) start out removed.
  for (int w = threadIdx.x; w < n_words; w += blockDim.x) {
    uint64_t bits = 0;
    for (int j = 0; j < kNmsBlock; ++j) {
      const int i = w * kNmsBlock + j;
      if (i >= n || seg_scores[i] == -INFINITY) bits |= uint64_t{1} << j;
    }
    removed[w] = bits;
  }
  __shared__ int kept_rows[kNmsBlock];
  __shared__ int num_new, num_kept, done;
  if (threadIdx.x == 0) {
    num_kept = 0;
    done = limit == 0;
  }
  __syncthreads();
  for (int w = 0; w < n_words && !done; ++w) {
    if (threadIdx.x == 0) {
      uint64_t word = removed[w];
      int fresh = 0;
      for (int j = 0; j < kNmsBlock; ++j) {
        if ((word >> j) & 1) continue;
        const int i = w * kNmsBlock + j;
        kept_rows[fresh++] = i;
        for (int q = 0; q < 4; ++q) out_boxes[4 * num_kept + q] = seg_boxes[4 * i + q];
        out_scores[num_kept] = seg_scores[i];
        if (++num_kept == limit) {
          done = 1;
          break;
        }
        word |= seg_mask[static_cast<int64_t>(i) * words + w];
      }
      num_new = fresh;
    }
    __syncthreads();
    if (!done) {
      for (int w2 = w + 1 + threadIdx.x; w2 < n_words; w2 += blockDim.x) {
        uint64_t acc = 0;
        for (int q = 0; q < num_new; ++q) {
          acc |= seg_mask[static_cast<int64_t>(kept_rows[q]) * words + w2];
        }
        removed[w2] |= acc;
      }
    }
    __syncthreads();
  }
}

__global__ void IotaKernel(int n, int* vals) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t < n) vals[t] = t;
}

// Step 5, per image: the first collect_top_n finite entries of each image.
__global__ void CollectPerImageKernel(int batch, int per_image, int collect, const float* keys,
                                      const int* vals, const float* kept_boxes, float* rois,
                                      float* roi_scores, int* num_rois) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int lim = min(per_image, collect);
  if (t >= static_cast<int64_t>(batch) * lim) return;
  const int b = t / lim, i = t % lim;
  const int64_t at = static_cast<int64_t>(b) * per_image + i;
  if (!isfinite(keys[at])) return;
  const int src = vals[at];
  float* out = rois + (static_cast<int64_t>(b) * collect + i) * 4;
  for (int j = 0; j < 4; ++j) out[j] = kept_boxes[4 * static_cast<int64_t>(src) + j];
  roi_scores[static_cast<int64_t>(b) * collect + i] = keys[at];
  if (i + 1 == lim || !isfinite(keys[at + 1])) num_rois[b] = i + 1;
}

// Step 5, per batch: image id of each of the first `take` sorted entries
// (batch, i.e. "after every image", for non-finite ones).
__global__ void ImageKeysKernel(int take, int batch, int per_image, const float* keys,
                                const int* vals, int* image_keys) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= take) return;
  image_keys[t] = isfinite(keys[t]) ? vals[t] / per_image : batch;
}

__global__ void ImageStartKernel(int take, int batch, const int* image_keys, int* start,
                                 int* num_rois) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= take) return;
  const int b = image_keys[t];
  if (b >= batch) return;
  if (t == 0 || image_keys[t - 1] != b) start[b] = t;
  if (t + 1 == take || image_keys[t + 1] != b) num_rois[b] = t + 1;  // end, fixed below
}

__global__ void CollectPerBatchKernel(int take, int batch, int collect, const int* image_keys,
                                      const int* ranks, const float* keys, const int* vals,
                                      const int* start, const float* kept_boxes, float* rois,
                                      float* roi_scores) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= take) return;
  const int b = image_keys[t];
  if (b >= batch) return;
  const int row = t - start[b];
  const int rank = ranks[t];  // position in the score-sorted order
  const int src = vals[rank];
  float* out = rois + (static_cast<int64_t>(b) * collect + row) * 4;
  for (int j = 0; j < 4; ++j) out[j] = kept_boxes[4 * static_cast<int64_t>(src) + j];
  roi_scores[static_cast<int64_t>(b) * collect + row] = keys[rank];
}

__global__ void FinishCountsKernel(int batch, const int* start, int* num_rois) {
  const int b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b < batch && num_rois[b] > 0) num_rois[b] -= start[b];
}

}  // namespace

size_t GenerateProposalsCudaWorkspaceSize(const ProposalsConfig& cfg, int64_t batch,
                                          int num_levels, const int64_t* num_anchors,
                                          cudaError_t* status) {
  *status = cudaErrorInvalidValue;
  if (num_levels < 0 || num_levels > kProposalsCudaMaxLevels || batch < 0) return 0;
  const LevelsParam lv = MakeLevels(cfg, num_levels, num_anchors, nullptr);
  Plan plan;
  *status = MakePlan(cfg, batch, lv, &plan);
  return *status == cudaSuccess ? plan.bytes : 0;
}

cudaError_t GenerateProposalsCuda(const ProposalsConfig& cfg, int64_t batch, int num_levels,
                                  const ProposalsLevel* levels, const float* image_info,
                                  float* rois, float* roi_scores, int32_t* num_rois,
                                  void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (num_levels < 0 || num_levels > kProposalsCudaMaxLevels || batch < 0) {
    return cudaErrorInvalidValue;
  }
  int64_t m[kProposalsCudaMaxLevels];
  for (int l = 0; l < num_levels; ++l) m[l] = levels[l].num_anchors;
  const LevelsParam lv = MakeLevels(cfg, num_levels, m, levels);
  Plan p;
  cudaError_t err = MakePlan(cfg, batch, lv, &p);
  if (err != cudaSuccess) return err;
  if (workspace_bytes < p.bytes) return cudaErrorInvalidValue;
  const int64_t c = cfg.collect_top_n;
  err = cudaMemsetAsync(rois, 0, batch * c * 4 * sizeof(float), stream);
  if (err == cudaSuccess) err = cudaMemsetAsync(roi_scores, 0, batch * c * sizeof(float), stream);
  if (err == cudaSuccess) err = cudaMemsetAsync(num_rois, 0, batch * sizeof(int32_t), stream);
  if (err != cudaSuccess) return err;
  if (p.collect_items == 0 || c == 0) return cudaSuccess;

  char* ws = static_cast<char*>(workspace);
  auto F = [ws](size_t at) { return reinterpret_cast<float*>(ws + at); };
  auto I = [ws](size_t at) { return reinterpret_cast<int*>(ws + at); };
  auto U = [ws](size_t at) { return reinterpret_cast<uint64_t*>(ws + at); };
  const int B = static_cast<int>(batch), S = static_cast<int>(p.segments);
  const int K = static_cast<int>(p.k_max), W = static_cast<int>(p.words);
  const int P = static_cast<int>(p.post_max), CI = static_cast<int>(p.collect_items);
  size_t temp_bytes = p.sort_temp;

  OffsetsKernel<<<Blocks(std::max(S, B)), kThreads, 0, stream>>>(
      lv, B, P, I(p.seg_begin), I(p.seg_end), I(p.img_begin), I(p.img_end));
  // Step 1: sort each (image, level) segment by descending score.
  GatherScoresKernel<<<Blocks(p.total), kThreads, 0, stream>>>(
      lv, static_cast<int>(p.total), F(p.keys_in), I(p.vals_in));
  err = cub::DeviceSegmentedSort::StableSortPairsDescending(
      ws + p.temp, temp_bytes, F(p.keys_in), F(p.keys_out), I(p.vals_in), I(p.vals_out),
      p.total, S, I(p.seg_begin), I(p.seg_end), stream);
  if (err != cudaSuccess) return err;
  // Steps 2-4: decode, NMS mask, NMS scan.
  DecodeKernel<<<Blocks(static_cast<int64_t>(S) * K), kThreads, 0, stream>>>(
      lv, cfg, S, K, image_info, I(p.seg_begin), F(p.keys_out), I(p.vals_out),
      F(p.cand_boxes), F(p.cand_scores));
  const float off = cfg.legacy_plus_one ? 1.f : 0.f;
  NmsMaskKernel<<<dim3(W, W, S), kNmsBlock, 0, stream>>>(lv, K, W, cfg.nms_threshold, off,
                                                        F(p.cand_boxes), U(p.mask));
  NmsScanKernel<<<S, kThreads, 0, stream>>>(lv, K, W, P, F(p.cand_boxes), F(p.cand_scores),
                                            U(p.mask), U(p.removed), F(p.kept_boxes),
                                            F(p.kept_scores));
  // Step 5: collect. Values are positions in the [S * P] kept arrays, so
  // stable sorts keep (image, level, rank) order among equal scores.
  IotaKernel<<<Blocks(CI), kThreads, 0, stream>>>(CI, I(p.cvals_in));
  if (!cfg.collect_per_batch) {
    err = cub::DeviceSegmentedSort::StableSortPairsDescending(
        ws + p.temp, temp_bytes, F(p.kept_scores), F(p.ckeys), I(p.cvals_in), I(p.cvals_out),
        CI, B, I(p.img_begin), I(p.img_end), stream);
    if (err != cudaSuccess) return err;
    const int per_image = CI / B;
    CollectPerImageKernel<<<Blocks(static_cast<int64_t>(B) * std::min<int64_t>(per_image, c)),
                            kThreads, 0, stream>>>(B, per_image, static_cast<int>(c), F(p.ckeys),
                                                   I(p.cvals_out), F(p.kept_boxes), rois,
                                                   roi_scores, num_rois);
    return cudaGetLastError();
  }
  err = cub::DeviceRadixSort::SortPairsDescending(ws + p.temp, temp_bytes, F(p.kept_scores),
                                                  F(p.ckeys), I(p.cvals_in), I(p.cvals_out), CI,
                                                  0, 32, stream);
  if (err != cudaSuccess) return err;
  const int take = static_cast<int>(std::min<int64_t>(c, CI));
  const int per_image = CI / B;
  ImageKeysKernel<<<Blocks(take), kThreads, 0, stream>>>(take, B, per_image, F(p.ckeys),
                                                         I(p.cvals_out), I(p.img_keys_in));
  // Stable sort of the selected entries by image; values = sorted rank.
  temp_bytes = p.sort_temp;
  int end_bit = 1;
  while ((1 << end_bit) <= B) ++end_bit;
  err = cub::DeviceRadixSort::SortPairs(ws + p.temp, temp_bytes, I(p.img_keys_in),
                                        I(p.img_keys_out), I(p.cvals_in), I(p.img_vals_out),
                                        take, 0, end_bit, stream);
  if (err != cudaSuccess) return err;
  ImageStartKernel<<<Blocks(take), kThreads, 0, stream>>>(take, B, I(p.img_keys_out),
                                                          I(p.image_start), num_rois);
  CollectPerBatchKernel<<<Blocks(take), kThreads, 0, stream>>>(
      take, B, static_cast<int>(c), I(p.img_keys_out), I(p.img_vals_out), F(p.ckeys),
      I(p.cvals_out), I(p.image_start), F(p.kept_boxes), rois, roi_scores);
  FinishCountsKernel<<<Blocks(B), kThreads, 0, stream>>>(B, I(p.image_start), num_rois);
  return cudaGetLastError();
}

}  // namespace tfdet
