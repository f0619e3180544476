// extern "C" shims over the proposal kernels for the ctypes harness
// (check_proposals.py). Levels are passed as parallel arrays of pointers and
// anchor counts; see kernels/proposals_cpu.h for the semantics.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/parallel.h"
#include "kernels/proposals_cpu.h"
#if TFDET_HARNESS_WITH_CUDA
#if __has_include(<cuda_runtime_api.h>)
#include "kernels/proposals_cuda.h"
#else
// build.sh compiles this file with the host compiler, which may not see the
// CUDA headers (add CPATH=$CUDA_HOME/include to use them). These are the
// declarations of kernels/proposals_cuda.h with the CUDA types forward
// declared; cudaError_t is an int-sized enum, cudaStream_t a CUstream_st*.
struct CUstream_st;
typedef CUstream_st* cudaStream_t;
enum cudaError : int;
typedef cudaError cudaError_t;
namespace tfdet {
size_t GenerateProposalsCudaWorkspaceSize(const ProposalsConfig& cfg, int64_t batch,
                                          int num_levels, const int64_t* num_anchors,
                                          cudaError_t* status);
cudaError_t GenerateProposalsCuda(const ProposalsConfig& cfg, int64_t batch, int num_levels,
                                  const ProposalsLevel* levels, const float* image_info,
                                  float* rois, float* roi_scores, int32_t* num_rois,
                                  void* workspace, size_t workspace_bytes, cudaStream_t stream);
}  // namespace tfdet
#endif
#endif

namespace {

tfdet::ProposalsConfig MakeConfig(int64_t pre, int64_t post, float nms, float min_size,
                                  int legacy, float xform_clip, int64_t collect,
                                  int per_batch) {
  tfdet::ProposalsConfig cfg;
  cfg.pre_nms_top_n = pre;
  cfg.post_nms_top_n = post;
  cfg.nms_threshold = nms;
  cfg.min_size = min_size;
  cfg.legacy_plus_one = legacy != 0;
  cfg.bbox_xform_clip = xform_clip;
  cfg.collect_top_n = collect;
  cfg.collect_per_batch = per_batch != 0;
  return cfg;
}

std::vector<tfdet::ProposalsLevel> MakeLevels(int num_levels, const float* const* scores,
                                              const float* const* deltas,
                                              const float* const* anchors,
                                              const int64_t* num_anchors) {
  std::vector<tfdet::ProposalsLevel> levels(num_levels);
  for (int l = 0; l < num_levels; ++l) {
    levels[l] = {scores[l], deltas[l], anchors[l], num_anchors[l]};
  }
  return levels;
}

}  // namespace

extern "C" {

// CPU kernel (serial). Host pointers. Returns 0, or -1 on bad arguments.
int tfdet_proposals_cpu(int64_t batch, int num_levels, const float* const* scores,
                        const float* const* deltas, const float* const* anchors,
                        const int64_t* num_anchors, const float* image_info, int64_t pre,
                        int64_t post, float nms, float min_size, int legacy, float xform_clip,
                        int64_t collect, int per_batch, float* rois, float* roi_scores,
                        int32_t* num_rois) {
  if (batch < 0 || num_levels < 0 || pre < 0 || post < 0 || collect < 0) return -1;
  const auto cfg = MakeConfig(pre, post, nms, min_size, legacy, xform_clip, collect, per_batch);
  const auto levels = MakeLevels(num_levels, scores, deltas, anchors, num_anchors);
  tfdet::GenerateProposalsCpu(cfg, batch, num_levels, levels.data(), image_info, rois,
                              roi_scores, num_rois, tfdet::SerialFor());
  return 0;
}

int tfdet_proposals_has_cuda() { return TFDET_HARNESS_WITH_CUDA; }

#if TFDET_HARNESS_WITH_CUDA
// Workspace bytes of tfdet_proposals_cuda (0 on error).
size_t tfdet_proposals_cuda_workspace(int64_t batch, int num_levels, const int64_t* num_anchors,
                                      int64_t pre, int64_t post, int64_t collect,
                                      int per_batch) {
  const auto cfg = MakeConfig(pre, post, 0.7f, 0.f, 1, 4.f, collect, per_batch);
  cudaError_t err = static_cast<cudaError_t>(0);
  const size_t bytes =
      tfdet::GenerateProposalsCudaWorkspaceSize(cfg, batch, num_levels, num_anchors, &err);
  return static_cast<int>(err) == 0 ? bytes : 0;
}

// CUDA launchers. Level and output pointers are device pointers (the pointer
// arrays themselves are host arrays); stream is a cudaStream_t (may be 0).
// Returns the cudaError_t value (0 = success).
int tfdet_proposals_cuda(int64_t batch, int num_levels, const float* const* scores,
                         const float* const* deltas, const float* const* anchors,
                         const int64_t* num_anchors, const float* image_info, int64_t pre,
                         int64_t post, float nms, float min_size, int legacy, float xform_clip,
                         int64_t collect, int per_batch, float* rois, float* roi_scores,
                         int32_t* num_rois, void* workspace, size_t workspace_bytes,
                         void* stream) {
  if (batch < 0 || num_levels < 0 || pre < 0 || post < 0 || collect < 0) {
    return 1;  // cudaErrorInvalidValue
  }
  const auto cfg = MakeConfig(pre, post, nms, min_size, legacy, xform_clip, collect, per_batch);
  const auto levels = MakeLevels(num_levels, scores, deltas, anchors, num_anchors);
  return static_cast<int>(tfdet::GenerateProposalsCuda(
      cfg, batch, num_levels, levels.data(), image_info, rois, roi_scores, num_rois, workspace,
      workspace_bytes, static_cast<cudaStream_t>(stream)));
}
#endif  // TFDET_HARNESS_WITH_CUDA

}  // extern "C"
