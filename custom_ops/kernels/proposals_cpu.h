// Proposal generation (Detectron's GenerateProposals per image and level,
// then CollectAndDistributeFpnRpnProposals' collection), plain C++.
//
// Shared definitions (ProposalsConfig, ProposalsLevel) are used by both the
// CPU kernel (proposals_cpu.cc) and the CUDA launchers (proposals_cuda.h).
//
// Semantics, per image b and level l (M_l = H_l * W_l * A anchors):
//  1. Candidates whose score is not finite (NaN, +-inf) are dropped.
//  2. The k_l = min(pre_nms_top_n, M_l) highest scores are taken
//     (pre_nms_top_n == 0: all), in descending score; equal scores are
//     ordered by lower flat index (y, x, a) first.
//  3. Each candidate is decoded with weights (1, 1, 1, 1), log-size deltas
//     clipped at bbox_xform_clip, then clipped to the image; a candidate is
//     dropped when any of its deltas, anchor coordinates or decoded (pre-clip)
//     coordinates is not finite.
//  4. Detectron's _filter_boxes: with offset o = 1 (legacy) or 0 (modern),
//     w = x2 - x1 + o, h likewise, the box is kept when
//       legacy: (x2 - x1) / scale + 1 >= max(min_size, 1) (and for h),
//       modern: (x2 - x1) / scale > min_size (and for h; detectron2's
//               "nonempty" rule, so zero-size boxes always go),
//     and its centre (x1 + w / 2, y1 + h / 2) is < (width, height).
//     An image whose image_info (height, width, scale) is not all positive
//     and finite gets no proposals.
//  5. Greedy NMS in that order: a box is suppressed when its IoU with an
//     already kept box reaches nms_threshold (legacy: IoU >= threshold, as
//     Detectron's cython nms; modern: IoU > threshold, as torchvision);
//     stops after post_nms_top_n kept (0: no limit).
// Collection: all kept proposals of all levels of an image, in descending
// score (ties: lower level, then earlier NMS rank). collect_per_batch=false:
// the first collect_top_n of each image. true (Detectron's FPN training, its
// issue 459): the collect_top_n best of the whole batch (ties: lower image
// first), each image keeping its share in descending score.
// Outputs are zero-padded: rois [B, C, 4], roi_scores [B, C], num_rois [B].
#ifndef TFDET_KERNELS_PROPOSALS_CPU_H_
#define TFDET_KERNELS_PROPOSALS_CPU_H_

#include <cmath>
#include <cstdint>

#include "kernels/parallel.h"

#ifdef __CUDACC__
#define TFDET_PROPOSALS_HD __host__ __device__
#else
#define TFDET_PROPOSALS_HD
#endif

namespace tfdet {

TFDET_PROPOSALS_HD inline bool ProposalsIsFinite(float x) {
#ifdef __CUDA_ARCH__
  return isfinite(x);
#else
  return std::isfinite(x);
#endif
}

struct ProposalsConfig {
  int64_t pre_nms_top_n = 0;   // per image per level; 0 = all
  int64_t post_nms_top_n = 0;  // per image per level, after NMS; 0 = all
  float nms_threshold = 0.7f;
  float min_size = 0.f;        // original-image pixels
  bool legacy_plus_one = true;
  float bbox_xform_clip = 4.135166556742356f;  // log(1000 / 16)
  int64_t collect_top_n = 0;   // rows per image in the outputs
  bool collect_per_batch = false;
};

// One pyramid level. Pointers are host (CPU kernel) or device (CUDA).
struct ProposalsLevel {
  const float* scores;   // [B, M] (NHWC [B, H, W, A] flattened)
  const float* deltas;   // [B, M, 4] (dx, dy, dw, dh)
  const float* anchors;  // [M, 4] (x1, y1, x2, y2), ordered (y, x, a)
  int64_t num_anchors;   // M = H * W * A
};

// Number of candidates kept by step 2 for a level of m anchors.
inline int64_t ProposalsPreNmsCount(const ProposalsConfig& cfg, int64_t m) {
  return (cfg.pre_nms_top_n > 0 && cfg.pre_nms_top_n < m) ? cfg.pre_nms_top_n : m;
}

// Maximum number of proposals step 5 keeps for a level of m anchors.
inline int64_t ProposalsPostNmsCount(const ProposalsConfig& cfg, int64_t m) {
  const int64_t k = ProposalsPreNmsCount(cfg, m);
  return (cfg.post_nms_top_n > 0 && cfg.post_nms_top_n < k) ? cfg.post_nms_top_n : k;
}

// Steps 3 and 4 for one candidate: decodes anchor a (x1, y1, x2, y2) with
// deltas d, clips it to the image (img_h, img_w) and writes the box to out.
// Returns false when the candidate is dropped (non-finite, too small or
// centre outside the image). Shared by the CPU and CUDA kernels so that both
// do the same float arithmetic (Detectron's bbox_transform + clip_tiled_boxes
// + _filter_boxes).
TFDET_PROPOSALS_HD inline bool ProposalsDecodeOne(const float* a, const float* d, float img_h,
                                                  float img_w, float scale, float min_size,
                                                  bool legacy, float xform_clip, float* out) {
  const float off = legacy ? 1.f : 0.f;
  // An image whose (height, width, scale) is not positive and finite gets
  // no proposals.
  bool finite = img_h > 0.f && img_w > 0.f && scale > 0.f && ProposalsIsFinite(img_h) &&
                ProposalsIsFinite(img_w) && ProposalsIsFinite(scale);
  for (int j = 0; j < 4; ++j) finite = finite && ProposalsIsFinite(a[j]) && ProposalsIsFinite(d[j]);
  if (!finite) return false;
  const float aw = a[2] - a[0] + off;
  const float ah = a[3] - a[1] + off;
  const float acx = a[0] + 0.5f * aw;
  const float acy = a[1] + 0.5f * ah;
  const float dw = d[2] < xform_clip ? d[2] : xform_clip;
  const float dh = d[3] < xform_clip ? d[3] : xform_clip;
  const float cx = d[0] * aw + acx;
  const float cy = d[1] * ah + acy;
  const float w = expf(dw) * aw;
  const float h = expf(dh) * ah;
  float box[4] = {cx - 0.5f * w, cy - 0.5f * h, cx + 0.5f * w - off, cy + 0.5f * h - off};
  const float lim[4] = {img_w - off, img_h - off, img_w - off, img_h - off};
  for (int j = 0; j < 4; ++j) {
    if (!ProposalsIsFinite(box[j])) return false;
    box[j] = box[j] > lim[j] ? lim[j] : box[j];
    box[j] = box[j] < 0.f ? 0.f : box[j];
  }
  const float bw = box[2] - box[0];
  const float bh = box[3] - box[1];
  bool keep;
  if (legacy) {
    const float m = min_size > 1.f ? min_size : 1.f;
    keep = bw / scale + 1.f >= m && bh / scale + 1.f >= m;
  } else {
    keep = bw / scale > min_size && bh / scale > min_size;
  }
  keep = keep && box[0] + (bw + off) / 2.f < img_w && box[1] + (bh + off) / 2.f < img_h;
  for (int j = 0; j < 4; ++j) out[j] = box[j];
  return keep;
}

// IoU of two boxes with the convention's offset (0 when the union is <= 0).
TFDET_PROPOSALS_HD inline float ProposalsIou(const float* a, const float* b, float off) {
  const float iw = fminf(a[2], b[2]) - fmaxf(a[0], b[0]) + off;
  const float ih = fminf(a[3], b[3]) - fmaxf(a[1], b[1]) + off;
  if (iw <= 0.f || ih <= 0.f) return 0.f;
  const float inter = iw * ih;
  const float area_a = (a[2] - a[0] + off) * (a[3] - a[1] + off);
  const float area_b = (b[2] - b[0] + off) * (b[3] - b[1] + off);
  const float uni = area_a + area_b - inter;
  return uni > 0.f ? inter / uni : 0.f;
}

// The NMS rule of step 5: does a box with this IoU get suppressed?
TFDET_PROPOSALS_HD inline bool ProposalsSuppresses(float iou, float threshold, float off) {
  return off > 0.f ? iou >= threshold : iou > threshold;
}

// Runs the whole op on the CPU. levels: num_levels entries;
// image_info: [B, 3] (height, width, scale). Outputs as described above.
// Multithreaded over (image, level) through parallel_for.
void GenerateProposalsCpu(const ProposalsConfig& cfg, int64_t batch, int num_levels,
                          const ProposalsLevel* levels, const float* image_info,
                          float* rois, float* roi_scores, int32_t* num_rois,
                          const ParallelFor& parallel_for);

}  // namespace tfdet

#endif  // TFDET_KERNELS_PROPOSALS_CPU_H_
