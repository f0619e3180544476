// CUDA launchers of proposal generation; semantics in proposals_cpu.h, which
// also holds the decode/IoU arithmetic shared with the CPU kernel.
//
// Device pointers, a cudaStream_t and a caller-provided workspace (size from
// GenerateProposalsCudaWorkspaceSize); nothing here touches TensorFlow, so
// the same launchers are driven by the TF op and by the ctypes harness.
//
// Algorithm (S = B * L segments, one per (image, level); K = max_l k_l
// candidates, P = max_l post-NMS count, W = ceil(K / 64)):
//  1. Gather: every score is copied into one array of S segments, with
//     non-finite scores replaced by -inf (and -0 by +0), and values = its flat
//     index. cub::DeviceSegmentedRadixSort sorts each segment descending; radix
//     sort is stable, so equal scores keep the lower index first (as on CPU).
//  2. Decode: one thread per (segment, rank < k_l) decodes, clips and filters
//     the candidate (ProposalsDecodeOne), writing boxes [S, K, 4] and a valid
//     flag (a -inf key, i.e. a non-finite score, is invalid).
//  3. NMS mask (torchvision's bitmask NMS): blocks of 64x64 (row box block,
//     column box block) per segment; bit j of mask[s, i, w] says that box
//     64 * w + j (later than i) has IoU > threshold with box i.
//  4. NMS scan: one thread block per segment walks the 64-box blocks in order;
//     one thread resolves a block serially (its diagonal word), then all
//     threads OR the kept rows' masks into the `removed` words of later
//     blocks. Invalid boxes start out removed. Stops after post_nms_top_n
//     kept. Output: [S, P] kept boxes/scores, invalid slots scored -inf.
//  5. Collect: per image (segments of L * P) or over the whole batch (one
//     segment of B * L * P), a stable radix sort descending by score, values
//     = position (so ties keep (image, level, rank) order); the first
//     collect_top_n finite entries are selected. Per batch, the selected
//     entries are then stably sorted by image, and each one's output row is
//     its position minus its image's first position.
// Memory: the NMS mask takes S * K * W * 8 bytes (2000 candidates: 500 KB per
// segment); pre_nms_top_n = 0 on a large level can make it too large for the
// device, which the caller sees as a failed workspace allocation.
#ifndef TFDET_KERNELS_PROPOSALS_CUDA_H_
#define TFDET_KERNELS_PROPOSALS_CUDA_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/proposals_cpu.h"

namespace tfdet {

// Most levels the CUDA launchers take (level pointers go by value to kernels).
constexpr int kProposalsCudaMaxLevels = 16;

// Bytes of workspace GenerateProposalsCuda needs. num_anchors: [num_levels]
// host array of M_l. Returns 0 and sets *status on a CUB query error.
size_t GenerateProposalsCudaWorkspaceSize(const ProposalsConfig& cfg, int64_t batch,
                                          int num_levels, const int64_t* num_anchors,
                                          cudaError_t* status);

// Runs the op on `stream`. levels: host array of num_levels (<=
// kProposalsCudaMaxLevels) levels whose pointers are device pointers;
// image_info [B, 3], rois [B, C, 4], roi_scores [B, C], num_rois [B] are
// device pointers; workspace holds workspace_bytes device bytes (at least the
// size query's answer). Returns the first CUDA error (launch errors only;
// the work is asynchronous on `stream`).
cudaError_t GenerateProposalsCuda(const ProposalsConfig& cfg, int64_t batch, int num_levels,
                                  const ProposalsLevel* levels, const float* image_info,
                                  float* rois, float* roi_scores, int32_t* num_rois,
                                  void* workspace, size_t workspace_bytes, cudaStream_t stream);

}  // namespace tfdet

#endif  // TFDET_KERNELS_PROPOSALS_CUDA_H_
