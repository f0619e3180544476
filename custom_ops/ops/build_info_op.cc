// TfdetBuildInfo: reports what the op library was built against, so the
// Python loader can tell a stale or mismatched build from a working one.
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

#ifndef TFDET_TF_VERSION
#error "TFDET_TF_VERSION must be defined by the build (setup.py or BUILD)"
#endif
#ifndef TFDET_WITH_CUDA
#define TFDET_WITH_CUDA 0
#endif

#define TFDET_STR2(x) #x
#define TFDET_STR(x) TFDET_STR2(x)

// Read from the file by tfdet/ops/_load.py before the library is loaded.
extern "C" __attribute__((used, visibility("default")))
const char tfdet_build_tag[] =
    "tfdet-build-tag:tf=" TFDET_TF_VERSION ";cuda=" TFDET_STR(TFDET_WITH_CUDA) ";";

namespace tensorflow {

REGISTER_OP("TfdetBuildInfo")
    .Output("tf_version: string")
    .Output("with_cuda: bool")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      c->set_output(0, c->Scalar());
      c->set_output(1, c->Scalar());
      return absl::OkStatus();
    })
    .Doc("Returns the TensorFlow version the op library was built for and "
         "whether its CUDA kernels were compiled.");

class TfdetBuildInfoOp : public OpKernel {
 public:
  explicit TfdetBuildInfoOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}
  void Compute(OpKernelContext* ctx) override {
    Tensor* version = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &version));
    version->scalar<tstring>()() = TFDET_TF_VERSION;
    Tensor* cuda = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({}), &cuda));
    cuda->scalar<bool>()() = TFDET_WITH_CUDA != 0;
  }
};

REGISTER_KERNEL_BUILDER(Name("TfdetBuildInfo").Device(DEVICE_CPU),
                        TfdetBuildInfoOp);

}  // namespace tensorflow
