// TfdetRoiAlign, TfdetMultiLevelRoiAlign and their gradient ops: op
// registrations and shape functions. The OpKernels are in
// roi_align_kernels.cc; semantics in kernels/roi_align_cpu.h.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
namespace {

using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

constexpr char kAttrs[] = R"doc(
spatial_scale: feature-map pixels per input-image pixel (1 / stride).
pooled_height: output bins along y (>= 1).
pooled_width: output bins along x (>= 1).
sampling_ratio: samples per bin along each axis; 0 = ceil(roi size / bins).
aligned: false = Detectron (no half-pixel shift, RoI size >= 1); true =
  detectron2 (coordinates shifted by -0.5 after scaling, no clamp).
)doc";

// Requires input `idx` (named `name`) to have `rank`, if its rank is known.
absl::Status RequireRank(InferenceContext* c, ShapeHandle s, int rank, const std::string& name,
                         const char* layout) {
  if (c->RankKnown(s) && c->Rank(s) != rank) {
    return errors::InvalidArgument(name, " must be rank ", rank, " ", layout, ", got shape ",
                                   c->DebugString(s));
  }
  return c->WithRank(s, rank, &s);
}

// Merges dimension 0 of `s` (input `name`) into *num_rois.
absl::Status MergeNumRois(InferenceContext* c, ShapeHandle s, const std::string& name,
                          DimensionHandle* num_rois) {
  DimensionHandle d = c->Dim(s, 0);
  if (c->ValueKnown(d) && c->ValueKnown(*num_rois) && c->Value(d) != c->Value(*num_rois)) {
    return errors::InvalidArgument(name, " has ", c->Value(d), " entries but rois has ",
                                   c->Value(*num_rois), " (mismatched num_rois)");
  }
  return c->Merge(*num_rois, d, num_rois);
}

// Checks rois [R, 4], batch_indices [R] and (when levels_idx >= 0) levels [R].
absl::Status RoisShape(InferenceContext* c, int rois_idx, int levels_idx,
                       DimensionHandle* num_rois) {
  ShapeHandle rois = c->input(rois_idx), bidx = c->input(rois_idx + 1);
  TF_RETURN_IF_ERROR(RequireRank(c, rois, 2, "rois", "[num_rois, 4]"));
  DimensionHandle four;
  absl::Status st = c->WithValue(c->Dim(rois, 1), 4, &four);
  if (!st.ok()) {
    return errors::InvalidArgument("rois must have shape [num_rois, 4], got ",
                                   c->DebugString(rois));
  }
  *num_rois = c->Dim(rois, 0);
  TF_RETURN_IF_ERROR(RequireRank(c, bidx, 1, "batch_indices", "[num_rois]"));
  TF_RETURN_IF_ERROR(MergeNumRois(c, bidx, "batch_indices", num_rois));
  if (levels_idx >= 0) {
    ShapeHandle levels = c->input(levels_idx);
    TF_RETURN_IF_ERROR(RequireRank(c, levels, 1, "levels", "[num_rois]"));
    TF_RETURN_IF_ERROR(MergeNumRois(c, levels, "levels", num_rois));
  }
  return absl::OkStatus();
}

absl::Status PooledOutputShape(InferenceContext* c, DimensionHandle num_rois,
                               DimensionHandle channels, ShapeHandle* out) {
  int ph, pw;
  TF_RETURN_IF_ERROR(c->GetAttr("pooled_height", &ph));
  TF_RETURN_IF_ERROR(c->GetAttr("pooled_width", &pw));
  *out = c->MakeShape({num_rois, c->MakeDim(ph), c->MakeDim(pw), channels});
  return absl::OkStatus();
}

absl::Status ForwardShape(InferenceContext* c, int num_levels, bool multi_level) {
  DimensionHandle channels = c->UnknownDim();
  for (int l = 0; l < num_levels; ++l) {
    ShapeHandle f = c->input(l);
    TF_RETURN_IF_ERROR(RequireRank(c, f, 4, !multi_level ? "features" : "features[" +
                                   std::to_string(l) + "]", "[batch, height, width, channels]"));
    TF_RETURN_IF_ERROR(c->Merge(channels, c->Dim(f, 3), &channels));
  }
  if (multi_level) {
    std::vector<float> scales;
    TF_RETURN_IF_ERROR(c->GetAttr("spatial_scales", &scales));
    if (static_cast<int>(scales.size()) != num_levels) {
      return errors::InvalidArgument("spatial_scales has ", scales.size(),
                                     " entries but there are N = ", num_levels, " features");
    }
  }
  DimensionHandle num_rois;
  TF_RETURN_IF_ERROR(RoisShape(c, num_levels, multi_level ? num_levels + 2 : -1, &num_rois));
  ShapeHandle out;
  TF_RETURN_IF_ERROR(PooledOutputShape(c, num_rois, channels, &out));
  c->set_output(0, out);
  return absl::OkStatus();
}

absl::Status GradShape(InferenceContext* c, int num_levels, bool multi_level) {
  TF_RETURN_IF_ERROR(RequireRank(c, c->input(0), 4, "grads",
                                 "[num_rois, pooled_height, pooled_width, channels]"));
  DimensionHandle num_rois;
  TF_RETURN_IF_ERROR(RoisShape(c, 1, multi_level ? 3 : -1, &num_rois));
  const int first_shape = multi_level ? 4 : 3;
  for (int l = 0; l < num_levels; ++l) {
    ShapeHandle s;
    TF_RETURN_IF_ERROR(c->MakeShapeFromShapeTensor(first_shape + l, &s));
    TF_RETURN_IF_ERROR(c->WithRank(s, 4, &s));
    c->set_output(l, s);
  }
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("TfdetRoiAlign")
    .Input("features: T")
    .Input("rois: float")
    .Input("batch_indices: int32")
    .Output("output: T")
    .Attr("T: {float, half}")
    .Attr("spatial_scale: float")
    .Attr("pooled_height: int >= 1")
    .Attr("pooled_width: int >= 1")
    .Attr("sampling_ratio: int >= 0 = 2")
    .Attr("aligned: bool = false")
    .SetShapeFn([](InferenceContext* c) { return ForwardShape(c, 1, false); })
    .Doc(std::string("RoIAlign. features [B, H, W, C], rois [R, 4] (x1, y1, x2, y2) in "
                     "image pixels, batch_indices [R] -> output [R, ph, pw, C].") + kAttrs);

REGISTER_OP("TfdetRoiAlignGrad")
    .Input("grads: T")
    .Input("rois: float")
    .Input("batch_indices: int32")
    .Input("features_shape: int32")
    .Output("grad_features: T")
    .Attr("T: {float, half}")
    .Attr("spatial_scale: float")
    .Attr("pooled_height: int >= 1")
    .Attr("pooled_width: int >= 1")
    .Attr("sampling_ratio: int >= 0 = 2")
    .Attr("aligned: bool = false")
    .SetShapeFn([](InferenceContext* c) { return GradShape(c, 1, false); })
    .Doc("Gradient of TfdetRoiAlign with respect to its features.");

REGISTER_OP("TfdetMultiLevelRoiAlign")
    .Input("features: N * T")
    .Input("rois: float")
    .Input("batch_indices: int32")
    .Input("levels: int32")
    .Output("output: T")
    .Attr("N: int >= 1")
    .Attr("T: {float, half}")
    .Attr("spatial_scales: list(float)")
    .Attr("pooled_height: int >= 1")
    .Attr("pooled_width: int >= 1")
    .Attr("sampling_ratio: int >= 0 = 2")
    .Attr("aligned: bool = false")
    .SetShapeFn([](InferenceContext* c) {
      int n;
      TF_RETURN_IF_ERROR(c->GetAttr("N", &n));
      return ForwardShape(c, n, true);
    })
    .Doc("RoIAlign over a feature pyramid: RoI r is pooled from features[levels[r]] "
         "with spatial_scales[levels[r]].");

REGISTER_OP("TfdetMultiLevelRoiAlignGrad")
    .Input("grads: T")
    .Input("rois: float")
    .Input("batch_indices: int32")
    .Input("levels: int32")
    .Input("features_shapes: N * int32")
    .Output("grad_features: N * T")
    .Attr("N: int >= 1")
    .Attr("T: {float, half}")
    .Attr("spatial_scales: list(float)")
    .Attr("pooled_height: int >= 1")
    .Attr("pooled_width: int >= 1")
    .Attr("sampling_ratio: int >= 0 = 2")
    .Attr("aligned: bool = false")
    .SetShapeFn([](InferenceContext* c) {
      int n;
      TF_RETURN_IF_ERROR(c->GetAttr("N", &n));
      return GradShape(c, n, true);
    })
    .Doc("Gradient of TfdetMultiLevelRoiAlign with respect to its N features.");

}  // namespace tensorflow
