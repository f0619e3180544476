// CPU kernel of proposal generation; semantics in proposals_cpu.h.
//
// Per (image, level) unit, run in parallel: top-k by partial selection
// (nth_element on the scores for the k-th value, then a sort of the k
// survivors), decode/clip/filter, then greedy NMS that tests each candidate
// against the boxes kept so far and stops once post_nms_top_n are kept. The collection step is cheap and runs serially.
#include "kernels/proposals_cpu.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <numeric>
#include <vector>

namespace tfdet {
namespace {

// Proposals kept for one (image, level), in NMS order (descending score).
struct LevelKept {
  std::vector<float> boxes;   // [n, 4]
  std::vector<float> scores;  // [n]
};

void ProposalsOneLevel(const ProposalsConfig& cfg, const ProposalsLevel& level, int64_t b,
                       const float* info, LevelKept* kept) {
  kept->boxes.clear();
  kept->scores.clear();
  const int64_t m = level.num_anchors;
  if (m == 0) return;
  const float* scores = level.scores + b * m;
  const float* deltas = level.deltas + b * m * 4;

  // Step 1-2: finite scores, top-k in (score desc, index asc) order. The k-th
  // largest score is found by nth_element on a copy of the scores; indices
  // above it, then those equal to it (lowest first), make the top k.
  std::vector<float> finite;
  finite.reserve(m);
  for (int64_t i = 0; i < m; ++i) {
    if (std::isfinite(scores[i])) finite.push_back(scores[i]);
  }
  const int64_t n_finite = finite.size();
  const int64_t k = std::min<int64_t>(ProposalsPreNmsCount(cfg, m), n_finite);
  std::vector<int64_t> order;
  order.reserve(k);
  if (k < n_finite && k > 0) {
    std::nth_element(finite.begin(), finite.begin() + (k - 1), finite.end(), std::greater<float>());
    const float kth = finite[k - 1];
    for (int64_t i = 0; i < m; ++i) {
      if (scores[i] > kth && std::isfinite(scores[i])) order.push_back(i);
    }
    for (int64_t i = 0; i < m && static_cast<int64_t>(order.size()) < k; ++i) {
      if (scores[i] == kth) order.push_back(i);
    }
  } else if (k > 0) {
    for (int64_t i = 0; i < m; ++i) {
      if (std::isfinite(scores[i])) order.push_back(i);
    }
  }
  auto better = [scores](int64_t a, int64_t c) {
    return scores[a] > scores[c] || (scores[a] == scores[c] && a < c);
  };
  std::sort(order.begin(), order.end(), better);

  // Steps 3-4: decode, clip, filter.
  std::vector<float> cand_boxes(4 * k);
  std::vector<float> cand_scores(k);
  int64_t n = 0;
  for (int64_t r = 0; r < k; ++r) {
    const int64_t i = order[r];
    if (ProposalsDecodeOne(level.anchors + 4 * i, deltas + 4 * i, info[0], info[1], info[2],
                           cfg.min_size, cfg.legacy_plus_one, cfg.bbox_xform_clip,
                           &cand_boxes[4 * n])) {
      cand_scores[n++] = scores[i];
    }
  }

  // Step 5: greedy NMS against the kept boxes, early stop at post_nms_top_n.
  // Kept boxes are stored column-wise so that a branch-free, vectorizable
  // pass with a slightly loose threshold (inter > t' * union, no division)
  // screens each chunk; a chunk that may hold an overlap is rechecked with
  // the exact IoU of ProposalsIou (the same test as the CUDA kernel).
  const int64_t limit = ProposalsPostNmsCount(cfg, m);
  const float off = cfg.legacy_plus_one ? 1.f : 0.f;
  const float loose = cfg.nms_threshold * (1.f - 1e-4f);
  const int64_t cap = std::min(limit, n);
  std::vector<float> kx1, ky1, kx2, ky2, karea;
  for (auto* v : {&kx1, &ky1, &kx2, &ky2, &karea}) v->reserve(cap);
  constexpr int64_t kChunk = 128;
  for (int64_t r = 0; r < n && static_cast<int64_t>(kx1.size()) < limit; ++r) {
    const float* box = &cand_boxes[4 * r];
    const float bx1 = box[0], by1 = box[1], bx2 = box[2], by2 = box[3];
    const float barea = (bx2 - bx1 + off) * (by2 - by1 + off);
    const int64_t num_kept = kx1.size();
    bool suppressed = false;
    for (int64_t j0 = 0; j0 < num_kept && !suppressed; j0 += kChunk) {
      const int64_t j1 = std::min(num_kept, j0 + kChunk);
      int hit = 0;
      for (int64_t j = j0; j < j1; ++j) {
        float iw = (kx2[j] < bx2 ? kx2[j] : bx2) - (kx1[j] > bx1 ? kx1[j] : bx1) + off;
        float ih = (ky2[j] < by2 ? ky2[j] : by2) - (ky1[j] > by1 ? ky1[j] : by1) + off;
        iw = iw > 0.f ? iw : 0.f;
        ih = ih > 0.f ? ih : 0.f;
        const float inter = iw * ih;
        hit |= inter > loose * (karea[j] + barea - inter);
      }
      if (!hit) continue;
      for (int64_t j = j0; j < j1 && !suppressed; ++j) {
        const float kept_box[4] = {kx1[j], ky1[j], kx2[j], ky2[j]};
        suppressed = ProposalsSuppresses(ProposalsIou(kept_box, box, off), cfg.nms_threshold, off);
      }
    }
    if (suppressed) continue;
    kx1.push_back(bx1);
    ky1.push_back(by1);
    kx2.push_back(bx2);
    ky2.push_back(by2);
    karea.push_back(barea);
    kept->scores.push_back(cand_scores[r]);
  }
  kept->boxes.resize(4 * kx1.size());
  for (size_t j = 0; j < kx1.size(); ++j) {
    kept->boxes[4 * j] = kx1[j];
    kept->boxes[4 * j + 1] = ky1[j];
    kept->boxes[4 * j + 2] = kx2[j];
    kept->boxes[4 * j + 3] = ky2[j];
  }
}

// A kept proposal during collection: its score and (image, level, rank).
struct Entry {
  float score;
  int64_t image;
  int32_t level;
  int64_t rank;
};

}  // namespace

void GenerateProposalsCpu(const ProposalsConfig& cfg, int64_t batch, int num_levels,
                          const ProposalsLevel* levels, const float* image_info,
                          float* rois, float* roi_scores, int32_t* num_rois,
                          const ParallelFor& parallel_for) {
  const int64_t c = cfg.collect_top_n;
  std::fill(rois, rois + batch * c * 4, 0.f);
  std::fill(roi_scores, roi_scores + batch * c, 0.f);
  std::fill(num_rois, num_rois + batch, 0);
  if (batch == 0 || num_levels == 0) return;

  std::vector<LevelKept> kept(batch * num_levels);
  int64_t cost = 1;
  for (int l = 0; l < num_levels; ++l) cost = std::max(cost, levels[l].num_anchors * 40);
  parallel_for(batch * num_levels, cost, [&](int64_t begin, int64_t end) {
    for (int64_t u = begin; u < end; ++u) {
      const int64_t b = u / num_levels;
      const int l = static_cast<int>(u % num_levels);
      ProposalsOneLevel(cfg, levels[l], b, image_info + 3 * b, &kept[u]);
    }
  });

  // Entries of every image, in (image, level, rank) order.
  std::vector<Entry> entries;
  for (int64_t b = 0; b < batch; ++b) {
    for (int l = 0; l < num_levels; ++l) {
      const LevelKept& lk = kept[b * num_levels + l];
      for (int64_t r = 0; r < static_cast<int64_t>(lk.scores.size()); ++r) {
        entries.push_back({lk.scores[r], b, l, r});
      }
    }
  }
  // Descending score; ties keep the (image, level, rank) order.
  auto better = [&entries](int64_t a, int64_t e) {
    return entries[a].score > entries[e].score || (entries[a].score == entries[e].score && a < e);
  };
  auto write = [&](const Entry& e) {
    int32_t& row = num_rois[e.image];
    const float* box = &kept[e.image * num_levels + e.level].boxes[4 * e.rank];
    std::memcpy(rois + (e.image * c + row) * 4, box, 4 * sizeof(float));
    roi_scores[e.image * c + row] = e.score;
    ++row;
  };
  std::vector<int64_t> order(entries.size());
  std::iota(order.begin(), order.end(), 0);
  if (cfg.collect_per_batch) {
    const int64_t take = std::min<int64_t>(c, order.size());
    std::partial_sort(order.begin(), order.begin() + take, order.end(), better);
    for (int64_t i = 0; i < take; ++i) write(entries[order[i]]);
    return;
  }
  int64_t start = 0;
  for (int64_t b = 0; b < batch; ++b) {
    int64_t stop = start;
    while (stop < static_cast<int64_t>(entries.size()) && entries[stop].image == b) ++stop;
    const int64_t take = std::min<int64_t>(c, stop - start);
    std::partial_sort(order.begin() + start, order.begin() + start + take, order.begin() + stop,
                      better);
    for (int64_t i = start; i < start + take; ++i) write(entries[order[i]]);
    start = stop;
  }
}

}  // namespace tfdet
