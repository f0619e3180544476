// CPU and GPU OpKernels of TfdetRoiAlign, TfdetMultiLevelRoiAlign and their
// gradients (registered in roi_align_op.cc): they validate their inputs and
// call the plain kernels of kernels/roi_align_{cpu,cuda}.h.
//
// On GPU, batch_indices and levels are read in host memory (so that they
// can be range-checked) and copied to the device for the kernels.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kernels/roi_align_cpu.h"
#include "ops/tf_parallel.h"
#include "tensorflow/core/framework/op_kernel.h"

#if GOOGLE_CUDA
#include "kernels/roi_align_cuda.h"
#endif

namespace tensorflow {
namespace {

using CPUDevice = Eigen::ThreadPoolDevice;
using GPUDevice = Eigen::GpuDevice;

// Validated sizes shared by the forward and gradient kernels.
struct RoiAlignSizes {
  std::vector<TensorShape> level_shapes;  // [batch, height, width, channels] each
  int64_t num_rois = 0;
  int batch = 0;
  int channels = 0;
};

// Inputs of one call, as the launchers see them.
struct RoiAlignArgs {
  const RoiAlignSizes* sizes;
  const std::vector<float>* scales;
  const tfdet::RoiAlignAttrs* attrs;
  const Tensor* rois;
  const Tensor* batch_indices;  // host memory (CPU and GPU)
  const Tensor* levels;         // host memory; nullptr for the single-level op
};

class RoiAlignOpBase : public OpKernel {
 public:
  RoiAlignOpBase(OpKernelConstruction* ctx, bool multi_level)
      : OpKernel(ctx), multi_level_(multi_level) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pooled_height", &attrs_.pooled_height));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pooled_width", &attrs_.pooled_width));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("sampling_ratio", &attrs_.sampling_ratio));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("aligned", &attrs_.aligned));
    OP_REQUIRES(ctx, attrs_.pooled_height >= 1 && attrs_.pooled_width >= 1,
                errors::InvalidArgument("pooled_height and pooled_width must be >= 1"));
    OP_REQUIRES(ctx, attrs_.sampling_ratio >= 0,
                errors::InvalidArgument("sampling_ratio must be >= 0, got ",
                                        attrs_.sampling_ratio));
    if (multi_level) {
      int n;
      OP_REQUIRES_OK(ctx, ctx->GetAttr("N", &n));
      OP_REQUIRES_OK(ctx, ctx->GetAttr("spatial_scales", &scales_));
      OP_REQUIRES(ctx, static_cast<int>(scales_.size()) == n,
                  errors::InvalidArgument("spatial_scales has ", scales_.size(),
                                          " entries but there are N = ", n, " features"));
    } else {
      float scale;
      OP_REQUIRES_OK(ctx, ctx->GetAttr("spatial_scale", &scale));
      scales_ = {scale};
    }
    for (float s : scales_) {
      OP_REQUIRES(ctx, std::isfinite(s),
                  errors::InvalidArgument(multi_level ? "spatial_scales" : "spatial_scale",
                                          " must be finite, got ", s));
    }
  }

 protected:
  std::string LevelName(int l) const {
    return multi_level_ ? "features[" + std::to_string(l) + "]" : "features";
  }

  // Checks the feature shapes, rois, batch_indices and levels (values too).
  absl::Status Validate(const std::vector<TensorShape>& shapes, const Tensor& rois,
                        const Tensor& batch_indices, const Tensor* levels,
                        RoiAlignSizes* sizes) const {
    const int n = static_cast<int>(shapes.size());
    if (n != static_cast<int>(scales_.size())) {
      return errors::InvalidArgument("spatial_scales has ", scales_.size(),
                                     " entries but there are ", n, " features");
    }
    for (int l = 0; l < n; ++l) {
      const TensorShape& s = shapes[l];
      if (s.dims() != 4) {
        return errors::InvalidArgument(LevelName(l),
                                       " must be rank 4 [batch, height, width, channels], got ",
                                       s.DebugString());
      }
      for (int d = 0; d < 4; ++d) {
        if (s.dim_size(d) > std::numeric_limits<int>::max()) {
          return errors::InvalidArgument(LevelName(l), " is too large: ", s.DebugString());
        }
      }
      if (s.dim_size(0) != shapes[0].dim_size(0) || s.dim_size(3) != shapes[0].dim_size(3)) {
        return errors::InvalidArgument(LevelName(l), " has shape ", s.DebugString(),
                                       " but features[0] has ", shapes[0].DebugString(),
                                       " (batch and channels must agree)");
      }
    }
    if (rois.dims() != 2 || rois.dim_size(1) != 4) {
      return errors::InvalidArgument("rois must have shape [num_rois, 4], got ",
                                     rois.shape().DebugString());
    }
    const int64_t num_rois = rois.dim_size(0);
    if (batch_indices.dims() != 1 || batch_indices.dim_size(0) != num_rois) {
      return errors::InvalidArgument("batch_indices must have shape [num_rois] = [", num_rois,
                                     "] (mismatched num_rois), got ",
                                     batch_indices.shape().DebugString());
    }
    if (levels && (levels->dims() != 1 || levels->dim_size(0) != num_rois)) {
      return errors::InvalidArgument("levels must have shape [num_rois] = [", num_rois,
                                     "] (mismatched num_rois), got ",
                                     levels->shape().DebugString());
    }
    const int64_t batch = shapes[0].dim_size(0);
    const auto bidx = batch_indices.flat<int32>();
    for (int64_t r = 0; r < num_rois; ++r) {
      if (bidx(r) < 0 || bidx(r) >= batch) {
        return errors::InvalidArgument("batch_indices[", r, "] = ", bidx(r),
                                       " is out of range [0, ", batch, ")");
      }
    }
    if (levels) {
      const auto lv = levels->flat<int32>();
      for (int64_t r = 0; r < num_rois; ++r) {
        if (lv(r) < 0 || lv(r) >= n) {
          return errors::InvalidArgument("levels[", r, "] = ", lv(r), " is out of range [0, ",
                                         n, ")");
        }
      }
    }
    sizes->level_shapes = shapes;
    sizes->num_rois = num_rois;
    sizes->batch = static_cast<int>(batch);
    sizes->channels = static_cast<int>(shapes[0].dim_size(3));
    return absl::OkStatus();
  }

  bool multi_level_;
  tfdet::RoiAlignAttrs attrs_;
  std::vector<float> scales_;
};

template <typename Device, typename T>
struct RoiAlignLauncher;

template <>
struct RoiAlignLauncher<CPUDevice, float> {
  static std::vector<tfdet::RoiAlignLevelCpu> Levels(const RoiAlignArgs& a) {
    std::vector<tfdet::RoiAlignLevelCpu> lv(a.sizes->level_shapes.size());
    for (size_t l = 0; l < lv.size(); ++l) {
      lv[l].height = static_cast<int>(a.sizes->level_shapes[l].dim_size(1));
      lv[l].width = static_cast<int>(a.sizes->level_shapes[l].dim_size(2));
      lv[l].spatial_scale = (*a.scales)[l];
    }
    return lv;
  }

  static void Forward(OpKernelContext* ctx, const RoiAlignArgs& a,
                      const std::vector<const Tensor*>& features, Tensor* output) {
    std::vector<tfdet::RoiAlignLevelCpu> lv = Levels(a);
    for (size_t l = 0; l < lv.size(); ++l) lv[l].data = features[l]->flat<float>().data();
    tfdet::RoiAlignForwardCpu(lv.data(), lv.size(), a.sizes->batch, a.sizes->channels,
                              a.rois->flat<float>().data(), a.batch_indices->flat<int32>().data(),
                              a.levels ? a.levels->flat<int32>().data() : nullptr,
                              a.sizes->num_rois, *a.attrs, output->flat<float>().data(),
                              tfdet::TfParallelFor(ctx));
  }

  static void Backward(OpKernelContext* ctx, const RoiAlignArgs& a, const Tensor& grads,
                       const std::vector<Tensor*>& outputs) {
    std::vector<tfdet::RoiAlignLevelCpu> lv = Levels(a);
    for (size_t l = 0; l < lv.size(); ++l) lv[l].grad = outputs[l]->flat<float>().data();
    tfdet::RoiAlignBackwardCpu(lv.data(), lv.size(), a.sizes->batch, a.sizes->channels,
                               grads.flat<float>().data(), a.rois->flat<float>().data(),
                               a.batch_indices->flat<int32>().data(),
                               a.levels ? a.levels->flat<int32>().data() : nullptr,
                               a.sizes->num_rois, *a.attrs, tfdet::TfParallelFor(ctx));
  }
};

template <typename Device, typename T>
class RoiAlignOp : public RoiAlignOpBase {
 public:
  RoiAlignOp(OpKernelConstruction* ctx, bool multi_level) : RoiAlignOpBase(ctx, multi_level) {}

  void Compute(OpKernelContext* ctx) override {
    std::vector<const Tensor*> features;
    if (multi_level_) {
      OpInputList list;
      OP_REQUIRES_OK(ctx, ctx->input_list("features", &list));
      for (int l = 0; l < list.size(); ++l) features.push_back(&list[l]);
    } else {
      features.push_back(&ctx->input(0));
    }
    const int base = static_cast<int>(features.size());
    std::vector<TensorShape> shapes;
    for (const Tensor* f : features) shapes.push_back(f->shape());
    const Tensor* levels = multi_level_ ? &ctx->input(base + 2) : nullptr;
    RoiAlignSizes sizes;
    OP_REQUIRES_OK(ctx, Validate(shapes, ctx->input(base), ctx->input(base + 1), levels, &sizes));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            0, TensorShape({sizes.num_rois, attrs_.pooled_height,
                                            attrs_.pooled_width, sizes.channels}),
                            &output));
    if (output->NumElements() == 0) return;
    const RoiAlignArgs args{&sizes, &scales_, &attrs_, &ctx->input(base),
                            &ctx->input(base + 1), levels};
    RoiAlignLauncher<Device, T>::Forward(ctx, args, features, output);
  }
};

template <typename Device, typename T>
class RoiAlignGradOp : public RoiAlignOpBase {
 public:
  RoiAlignGradOp(OpKernelConstruction* ctx, bool multi_level)
      : RoiAlignOpBase(ctx, multi_level) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& grads = ctx->input(0);
    const Tensor* levels = multi_level_ ? &ctx->input(3) : nullptr;
    std::vector<const Tensor*> shape_tensors;
    if (multi_level_) {
      OpInputList list;
      OP_REQUIRES_OK(ctx, ctx->input_list("features_shapes", &list));
      for (int l = 0; l < list.size(); ++l) shape_tensors.push_back(&list[l]);
    } else {
      shape_tensors.push_back(&ctx->input(3));
    }
    const char* shape_name = multi_level_ ? "features_shapes" : "features_shape";
    std::vector<TensorShape> shapes(shape_tensors.size());
    for (size_t l = 0; l < shapes.size(); ++l) {
      const Tensor& t = *shape_tensors[l];
      OP_REQUIRES(ctx, t.dims() == 1 && t.NumElements() == 4,
                  errors::InvalidArgument(shape_name, " must hold 4 sizes, got shape ",
                                          t.shape().DebugString()));
      OP_REQUIRES_OK(ctx, TensorShapeUtils::MakeShape(t.flat<int32>().data(), 4, &shapes[l]));
    }
    RoiAlignSizes sizes;
    OP_REQUIRES_OK(ctx, Validate(shapes, ctx->input(1), ctx->input(2), levels, &sizes));
    const TensorShape want({sizes.num_rois, attrs_.pooled_height, attrs_.pooled_width,
                            sizes.channels});
    OP_REQUIRES(ctx, grads.shape() == want,
                errors::InvalidArgument("grads must have shape ", want.DebugString(),
                                        " [num_rois, pooled_height, pooled_width, channels], got ",
                                        grads.shape().DebugString()));
    std::vector<Tensor*> outputs(shapes.size());
    int64_t total = 0;
    for (size_t l = 0; l < shapes.size(); ++l) {
      OP_REQUIRES_OK(ctx, ctx->allocate_output(l, shapes[l], &outputs[l]));
      total += outputs[l]->NumElements();
    }
    if (total == 0) return;
    const RoiAlignArgs args{&sizes, &scales_, &attrs_, &ctx->input(1), &ctx->input(2), levels};
    RoiAlignLauncher<Device, T>::Backward(ctx, args, grads, outputs);
  }
};

// Op classes with the level flavour fixed, for REGISTER_KERNEL_BUILDER.
template <typename Device, typename T, bool kMulti>
class RoiAlignKernel : public RoiAlignOp<Device, T> {
 public:
  explicit RoiAlignKernel(OpKernelConstruction* ctx) : RoiAlignOp<Device, T>(ctx, kMulti) {}
};

template <typename Device, typename T, bool kMulti>
class RoiAlignGradKernel : public RoiAlignGradOp<Device, T> {
 public:
  explicit RoiAlignGradKernel(OpKernelConstruction* ctx)
      : RoiAlignGradOp<Device, T>(ctx, kMulti) {}
};

#if GOOGLE_CUDA
template <typename T>
struct CudaTypeOf {
  using type = T;
};
template <>
struct CudaTypeOf<Eigen::half> {
  using type = __half;
};

template <typename T>
struct RoiAlignLauncher<GPUDevice, T> {
  using CT = typename CudaTypeOf<T>::type;

  // Copies a host int32 tensor into a new device tensor (synchronously, so
  // that the host buffer may be released at once).
  static absl::Status ToDevice(OpKernelContext* ctx, const Tensor* host, Tensor* device) {
    if (!host) return absl::OkStatus();
    TF_RETURN_IF_ERROR(ctx->allocate_temp(DT_INT32, host->shape(), device));
    const cudaStream_t stream = ctx->eigen_gpu_device().stream();
    const int err = tfdet::RoiAlignCopyToDevice(device->flat<int32>().data(),
                                                host->flat<int32>().data(),
                                                host->NumElements() * sizeof(int32), stream);
    return CudaStatus(err, "copying indices to the device");
  }

  static absl::Status CudaStatus(int err, const char* what) {
    if (err == 0) return absl::OkStatus();
    return errors::Internal("RoIAlign CUDA: ", what, " failed: ",
                            tfdet::RoiAlignCudaErrorString(err), " (", err, ")");
  }

  static std::vector<tfdet::RoiAlignLevelCuda<CT>> Levels(const RoiAlignArgs& a) {
    std::vector<tfdet::RoiAlignLevelCuda<CT>> lv(a.sizes->level_shapes.size());
    for (size_t l = 0; l < lv.size(); ++l) {
      lv[l].data = nullptr;
      lv[l].grad = nullptr;
      lv[l].height = static_cast<int>(a.sizes->level_shapes[l].dim_size(1));
      lv[l].width = static_cast<int>(a.sizes->level_shapes[l].dim_size(2));
      lv[l].spatial_scale = (*a.scales)[l];
    }
    return lv;
  }

  static absl::Status CheckLevels(size_t n) {
    if (n > static_cast<size_t>(tfdet::kRoiAlignCudaMaxLevels)) {
      return errors::InvalidArgument("features: at most ", tfdet::kRoiAlignCudaMaxLevels,
                                     " levels are supported on GPU, got ", n);
    }
    return absl::OkStatus();
  }

  static void Forward(OpKernelContext* ctx, const RoiAlignArgs& a,
                      const std::vector<const Tensor*>& features, Tensor* output) {
    OP_REQUIRES_OK(ctx, CheckLevels(features.size()));
    Tensor bidx, levels;
    OP_REQUIRES_OK(ctx, ToDevice(ctx, a.batch_indices, &bidx));
    OP_REQUIRES_OK(ctx, ToDevice(ctx, a.levels, &levels));
    std::vector<tfdet::RoiAlignLevelCuda<CT>> lv = Levels(a);
    for (size_t l = 0; l < lv.size(); ++l) {
      lv[l].data = reinterpret_cast<const CT*>(features[l]->flat<T>().data());
    }
    const int err = tfdet::RoiAlignForwardCuda<CT>(
        lv.data(), lv.size(), a.sizes->batch, a.sizes->channels, a.rois->flat<float>().data(),
        bidx.flat<int32>().data(), a.levels ? levels.flat<int32>().data() : nullptr,
        a.sizes->num_rois, *a.attrs, reinterpret_cast<CT*>(output->flat<T>().data()),
        ctx->eigen_gpu_device().stream());
    OP_REQUIRES_OK(ctx, CudaStatus(err, "forward"));
  }

  static void Backward(OpKernelContext* ctx, const RoiAlignArgs& a, const Tensor& grads,
                       const std::vector<Tensor*>& outputs) {
    OP_REQUIRES_OK(ctx, CheckLevels(outputs.size()));
    Tensor bidx, levels, workspace;
    OP_REQUIRES_OK(ctx, ToDevice(ctx, a.batch_indices, &bidx));
    OP_REQUIRES_OK(ctx, ToDevice(ctx, a.levels, &levels));
    std::vector<tfdet::RoiAlignLevelCuda<CT>> lv = Levels(a);
    std::vector<int64_t> elements(lv.size());
    for (size_t l = 0; l < lv.size(); ++l) {
      lv[l].grad = reinterpret_cast<CT*>(outputs[l]->flat<T>().data());
      elements[l] = outputs[l]->NumElements();
    }
    const size_t bytes =
        tfdet::RoiAlignBackwardCudaWorkspaceBytes<CT>(elements.data(), elements.size());
    void* ws = nullptr;
    if (bytes > 0) {
      OP_REQUIRES_OK(ctx, ctx->allocate_temp(DT_INT8, TensorShape({static_cast<int64_t>(bytes)}),
                                             &workspace));
      ws = workspace.flat<int8>().data();
    }
    const int err = tfdet::RoiAlignBackwardCuda<CT>(
        lv.data(), lv.size(), a.sizes->batch, a.sizes->channels,
        reinterpret_cast<const CT*>(grads.flat<T>().data()), a.rois->flat<float>().data(),
        bidx.flat<int32>().data(), a.levels ? levels.flat<int32>().data() : nullptr,
        a.sizes->num_rois, *a.attrs, ws, ctx->eigen_gpu_device().stream());
    OP_REQUIRES_OK(ctx, CudaStatus(err, "backward"));
  }
};
#endif  // GOOGLE_CUDA

}  // namespace

REGISTER_KERNEL_BUILDER(Name("TfdetRoiAlign").Device(DEVICE_CPU).TypeConstraint<float>("T"),
                        RoiAlignKernel<CPUDevice, float, false>);
REGISTER_KERNEL_BUILDER(Name("TfdetRoiAlignGrad").Device(DEVICE_CPU).TypeConstraint<float>("T"),
                        RoiAlignGradKernel<CPUDevice, float, false>);
REGISTER_KERNEL_BUILDER(
    Name("TfdetMultiLevelRoiAlign").Device(DEVICE_CPU).TypeConstraint<float>("T"),
    RoiAlignKernel<CPUDevice, float, true>);
REGISTER_KERNEL_BUILDER(
    Name("TfdetMultiLevelRoiAlignGrad").Device(DEVICE_CPU).TypeConstraint<float>("T"),
    RoiAlignGradKernel<CPUDevice, float, true>);

#if GOOGLE_CUDA
#define TFDET_REGISTER_ROI_ALIGN_GPU(T)                                               \
  REGISTER_KERNEL_BUILDER(Name("TfdetRoiAlign")                                       \
                              .Device(DEVICE_GPU)                                     \
                              .TypeConstraint<T>("T")                                 \
                              .HostMemory("batch_indices"),                           \
                          RoiAlignKernel<GPUDevice, T, false>);                       \
  REGISTER_KERNEL_BUILDER(Name("TfdetRoiAlignGrad")                                   \
                              .Device(DEVICE_GPU)                                     \
                              .TypeConstraint<T>("T")                                 \
                              .HostMemory("batch_indices")                            \
                              .HostMemory("features_shape"),                          \
                          RoiAlignGradKernel<GPUDevice, T, false>);                   \
  REGISTER_KERNEL_BUILDER(Name("TfdetMultiLevelRoiAlign")                             \
                              .Device(DEVICE_GPU)                                     \
                              .TypeConstraint<T>("T")                                 \
                              .HostMemory("batch_indices")                            \
                              .HostMemory("levels"),                                  \
                          RoiAlignKernel<GPUDevice, T, true>);                        \
  REGISTER_KERNEL_BUILDER(Name("TfdetMultiLevelRoiAlignGrad")                         \
                              .Device(DEVICE_GPU)                                     \
                              .TypeConstraint<T>("T")                                 \
                              .HostMemory("batch_indices")                            \
                              .HostMemory("levels")                                   \
                              .HostMemory("features_shapes"),                         \
                          RoiAlignGradKernel<GPUDevice, T, true>);
TFDET_REGISTER_ROI_ALIGN_GPU(float)
TFDET_REGISTER_ROI_ALIGN_GPU(Eigen::half)
#undef TFDET_REGISTER_ROI_ALIGN_GPU
#endif  // GOOGLE_CUDA

}  // namespace tensorflow
