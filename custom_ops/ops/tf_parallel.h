// ParallelFor backed by TensorFlow's intra-op thread pool.
#ifndef TFDET_OPS_TF_PARALLEL_H_
#define TFDET_OPS_TF_PARALLEL_H_

#include "kernels/parallel.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tfdet {

inline ParallelFor TfParallelFor(tensorflow::OpKernelContext* ctx) {
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
  return [workers](int64_t n, int64_t cost,
                   const std::function<void(int64_t, int64_t)>& fn) {
    if (n <= 0) return;
    tensorflow::Shard(workers->num_threads, workers->workers, n, cost, fn);
  };
}

}  // namespace tfdet

#endif  // TFDET_OPS_TF_PARALLEL_H_
