// TfdetGenerateProposals: registration, shape function and the CPU / GPU
// OpKernels. The work is done by kernels/proposals_cpu.* and
// kernels/proposals_cuda.*; semantics are documented in proposals_cpu.h.
#include <string>
#include <vector>

#include "kernels/proposals_cpu.h"
#include "ops/tf_parallel.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#if GOOGLE_CUDA
#ifndef EIGEN_USE_GPU
#define EIGEN_USE_GPU
#endif
#include "kernels/proposals_cuda.h"
#include "unsupported/Eigen/CXX11/Tensor"
#endif

namespace tensorflow {

using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

REGISTER_OP("TfdetGenerateProposals")
    .Input("scores: N * float")
    .Input("deltas: N * float")
    .Input("anchors: N * float")
    .Input("image_info: float")
    .Output("rois: float")
    .Output("roi_scores: float")
    .Output("num_rois: int32")
    .Attr("N: int >= 1")
    .Attr("pre_nms_top_n: int")
    .Attr("post_nms_top_n: int")
    .Attr("nms_threshold: float")
    .Attr("min_size: float")
    .Attr("legacy_plus_one: bool")
    .Attr("bbox_xform_clip: float")
    .Attr("collect_top_n: int")
    .Attr("collect_per_batch: bool")
    .SetShapeFn([](InferenceContext* c) {
      int n;
      TF_RETURN_IF_ERROR(c->GetAttr("N", &n));
      int64_t collect;
      TF_RETURN_IF_ERROR(c->GetAttr("collect_top_n", &collect));
      if (collect < 0) {
        return errors::InvalidArgument("collect_top_n must be >= 0, got ", collect);
      }
      // Ranks are checked here with messages naming the argument.
      auto with_rank = [c](int index, int rank, const std::string& name,
                           ShapeHandle* out) -> Status {
        ShapeHandle in = c->input(index);
        if (c->RankKnown(in) && c->Rank(in) != rank) {
          return errors::InvalidArgument(name, " must have rank ", rank, ", got shape ",
                                         c->DebugString(in));
        }
        return c->WithRank(in, rank, out);
      };
      ShapeHandle info;
      TF_RETURN_IF_ERROR(with_rank(3 * n, 2, "image_info", &info));
      DimensionHandle batch = c->Dim(info, 0);
      for (int l = 0; l < n; ++l) {
        const std::string lv = "[" + std::to_string(l) + "]";
        ShapeHandle s, d, a;
        TF_RETURN_IF_ERROR(with_rank(l, 4, "scores" + lv, &s));
        TF_RETURN_IF_ERROR(with_rank(n + l, 4, "deltas" + lv, &d));
        TF_RETURN_IF_ERROR(with_rank(2 * n + l, 2, "anchors" + lv, &a));
        if (!c->Merge(batch, c->Dim(s, 0), &batch).ok()) {
          return errors::InvalidArgument("scores", lv, " batch size does not match image_info");
        }
        if (!c->Merge(batch, c->Dim(d, 0), &batch).ok()) {
          return errors::InvalidArgument("deltas", lv, " batch size does not match image_info");
        }
      }
      c->set_output(0, c->MakeShape({batch, collect, 4}));
      c->set_output(1, c->MakeShape({batch, collect}));
      c->set_output(2, c->MakeShape({batch}));
      return absl::OkStatus();
    })
    .Doc(R"doc(
Detectron's RPN proposal generation per image and level (top-k, decode,
clip, min-size filter, NMS) followed by the collection of all levels' top
proposals, per image or over the whole batch. See
custom_ops/kernels/proposals_cpu.h.

scores: N levels of [B, H, W, A] objectness scores (higher is better).
deltas: N levels of [B, H, W, A * 4] (dx, dy, dw, dh) per anchor.
anchors: N levels of [H * W * A, 4] (x1, y1, x2, y2), ordered (y, x, a).
image_info: [B, 3] (height, width, scale) of the resized, unpadded image.
rois: [B, collect_top_n, 4], zero-padded.
roi_scores: [B, collect_top_n], zero-padded.
num_rois: [B] number of valid rows.
)doc");

namespace {

// Reads and checks the attributes shared by the CPU and GPU kernels.
Status ReadProposalsConfig(OpKernelConstruction* ctx, tfdet::ProposalsConfig* cfg) {
  TF_RETURN_IF_ERROR(ctx->GetAttr("pre_nms_top_n", &cfg->pre_nms_top_n));
  TF_RETURN_IF_ERROR(ctx->GetAttr("post_nms_top_n", &cfg->post_nms_top_n));
  TF_RETURN_IF_ERROR(ctx->GetAttr("nms_threshold", &cfg->nms_threshold));
  TF_RETURN_IF_ERROR(ctx->GetAttr("min_size", &cfg->min_size));
  TF_RETURN_IF_ERROR(ctx->GetAttr("legacy_plus_one", &cfg->legacy_plus_one));
  TF_RETURN_IF_ERROR(ctx->GetAttr("bbox_xform_clip", &cfg->bbox_xform_clip));
  TF_RETURN_IF_ERROR(ctx->GetAttr("collect_top_n", &cfg->collect_top_n));
  TF_RETURN_IF_ERROR(ctx->GetAttr("collect_per_batch", &cfg->collect_per_batch));
  if (cfg->pre_nms_top_n < 0) {
    return errors::InvalidArgument("pre_nms_top_n must be >= 0 (0 = all), got ",
                                   cfg->pre_nms_top_n);
  }
  if (cfg->post_nms_top_n < 0) {
    return errors::InvalidArgument("post_nms_top_n must be >= 0 (0 = all), got ",
                                   cfg->post_nms_top_n);
  }
  if (cfg->collect_top_n < 0) {
    return errors::InvalidArgument("collect_top_n must be >= 0, got ", cfg->collect_top_n);
  }
  if (!(cfg->nms_threshold >= 0.f && cfg->nms_threshold <= 1.f)) {
    return errors::InvalidArgument("nms_threshold must be in [0, 1], got ", cfg->nms_threshold);
  }
  if (!(cfg->min_size >= 0.f) || !std::isfinite(cfg->min_size)) {
    return errors::InvalidArgument("min_size must be finite and >= 0, got ", cfg->min_size);
  }
  if (!std::isfinite(cfg->bbox_xform_clip)) {
    return errors::InvalidArgument("bbox_xform_clip must be finite, got ", cfg->bbox_xform_clip);
  }
  return absl::OkStatus();
}

// Checks the inputs' shapes; fills levels (data pointers of the inputs) and
// the batch size.
Status ReadProposalsInputs(OpKernelContext* ctx, std::vector<tfdet::ProposalsLevel>* levels,
                           int64_t* batch) {
  OpInputList scores, deltas, anchors;
  TF_RETURN_IF_ERROR(ctx->input_list("scores", &scores));
  TF_RETURN_IF_ERROR(ctx->input_list("deltas", &deltas));
  TF_RETURN_IF_ERROR(ctx->input_list("anchors", &anchors));
  const Tensor& info = ctx->input(3 * scores.size());
  if (info.dims() != 2 || info.dim_size(1) != 3) {
    return errors::InvalidArgument("image_info must be [batch, 3] (height, width, scale), got ",
                                   info.shape().DebugString());
  }
  *batch = info.dim_size(0);
  levels->clear();
  for (int l = 0; l < scores.size(); ++l) {
    const Tensor& s = scores[l];
    const Tensor& d = deltas[l];
    const Tensor& a = anchors[l];
    const std::string lv = "[" + std::to_string(l) + "]";
    if (s.dims() != 4) {
      return errors::InvalidArgument("scores", lv, " must be [batch, height, width, A], got ",
                                     s.shape().DebugString());
    }
    if (d.dims() != 4) {
      return errors::InvalidArgument("deltas", lv, " must be [batch, height, width, A * 4], got ",
                                     d.shape().DebugString());
    }
    if (a.dims() != 2 || a.dim_size(1) != 4) {
      return errors::InvalidArgument("anchors", lv, " must be [height * width * A, 4], got ",
                                     a.shape().DebugString());
    }
    if (s.dim_size(0) != *batch) {
      return errors::InvalidArgument("scores", lv, " has batch ", s.dim_size(0),
                                     " but image_info has ", *batch);
    }
    if (d.dim_size(0) != *batch || d.dim_size(1) != s.dim_size(1) ||
        d.dim_size(2) != s.dim_size(2) || d.dim_size(3) != 4 * s.dim_size(3)) {
      return errors::InvalidArgument("deltas", lv, " must be ", *batch, "x", s.dim_size(1), "x",
                                     s.dim_size(2), "x", 4 * s.dim_size(3), " to match scores",
                                     lv, " ", s.shape().DebugString(), ", got ",
                                     d.shape().DebugString());
    }
    const int64_t m = s.dim_size(1) * s.dim_size(2) * s.dim_size(3);
    if (a.dim_size(0) != m) {
      return errors::InvalidArgument("anchors", lv, " has ", a.dim_size(0),
                                     " rows, but scores", lv, " has height * width * A = ", m);
    }
    if (m > (int64_t{1} << 31) - 1) {
      return errors::InvalidArgument("scores", lv, " has more than 2^31 - 1 anchors per image");
    }
    levels->push_back({s.flat<float>().data(), d.flat<float>().data(),
                       a.flat<float>().data(), m});
  }
  return absl::OkStatus();
}

Status AllocateProposalsOutputs(OpKernelContext* ctx, int64_t batch, int64_t collect,
                                Tensor** rois, Tensor** scores, Tensor** num) {
  TF_RETURN_IF_ERROR(ctx->allocate_output(0, TensorShape({batch, collect, 4}), rois));
  TF_RETURN_IF_ERROR(ctx->allocate_output(1, TensorShape({batch, collect}), scores));
  return ctx->allocate_output(2, TensorShape({batch}), num);
}

}  // namespace

class TfdetGenerateProposalsCpuOp : public OpKernel {
 public:
  explicit TfdetGenerateProposalsCpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ReadProposalsConfig(ctx, &cfg_));
  }

  void Compute(OpKernelContext* ctx) override {
    std::vector<tfdet::ProposalsLevel> levels;
    int64_t batch = 0;
    OP_REQUIRES_OK(ctx, ReadProposalsInputs(ctx, &levels, &batch));
    Tensor *rois = nullptr, *scores = nullptr, *num = nullptr;
    OP_REQUIRES_OK(ctx, AllocateProposalsOutputs(ctx, batch, cfg_.collect_top_n, &rois, &scores,
                                                 &num));
    tfdet::GenerateProposalsCpu(cfg_, batch, static_cast<int>(levels.size()), levels.data(),
                                ctx->input(3 * levels.size()).flat<float>().data(),
                                rois->flat<float>().data(), scores->flat<float>().data(),
                                num->flat<int32>().data(), tfdet::TfParallelFor(ctx));
  }

 private:
  tfdet::ProposalsConfig cfg_;
};

REGISTER_KERNEL_BUILDER(Name("TfdetGenerateProposals").Device(DEVICE_CPU),
                        TfdetGenerateProposalsCpuOp);

#if GOOGLE_CUDA
class TfdetGenerateProposalsGpuOp : public OpKernel {
 public:
  explicit TfdetGenerateProposalsGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ReadProposalsConfig(ctx, &cfg_));
  }

  void Compute(OpKernelContext* ctx) override {
    std::vector<tfdet::ProposalsLevel> levels;
    int64_t batch = 0;
    OP_REQUIRES_OK(ctx, ReadProposalsInputs(ctx, &levels, &batch));
    OP_REQUIRES(ctx, levels.size() <= static_cast<size_t>(tfdet::kProposalsCudaMaxLevels),
                errors::InvalidArgument("scores: the GPU kernel takes at most ",
                                        tfdet::kProposalsCudaMaxLevels, " levels, got ",
                                        levels.size()));
    Tensor *rois = nullptr, *scores = nullptr, *num = nullptr;
    OP_REQUIRES_OK(ctx, AllocateProposalsOutputs(ctx, batch, cfg_.collect_top_n, &rois, &scores,
                                                 &num));
    const int num_levels = static_cast<int>(levels.size());
    std::vector<int64_t> sizes;
    for (const auto& lv : levels) sizes.push_back(lv.num_anchors);
    cudaError_t err = cudaSuccess;
    const size_t bytes =
        tfdet::GenerateProposalsCudaWorkspaceSize(cfg_, batch, num_levels, sizes.data(), &err);
    OP_REQUIRES(ctx, err == cudaSuccess,
                errors::Internal("TfdetGenerateProposals workspace query: ",
                                 cudaGetErrorString(err)));
    Tensor workspace;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(DT_INT8, TensorShape({static_cast<int64_t>(bytes)}),
                                           &workspace));
    cudaStream_t stream = ctx->eigen_gpu_device().stream();
    err = tfdet::GenerateProposalsCuda(
        cfg_, batch, num_levels, levels.data(),
        ctx->input(3 * num_levels).flat<float>().data(), rois->flat<float>().data(),
        scores->flat<float>().data(), num->flat<int32>().data(),
        workspace.flat<int8>().data(), bytes, stream);
    OP_REQUIRES(ctx, err == cudaSuccess,
                errors::Internal("TfdetGenerateProposals CUDA launch: ",
                                 cudaGetErrorString(err)));
  }

 private:
  tfdet::ProposalsConfig cfg_;
};

REGISTER_KERNEL_BUILDER(Name("TfdetGenerateProposals").Device(DEVICE_GPU),
                        TfdetGenerateProposalsGpuOp);
#endif  // GOOGLE_CUDA

}  // namespace tensorflow
