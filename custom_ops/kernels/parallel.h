// A parallel-for hook that keeps the plain kernels free of TensorFlow.
//
// CPU kernels in custom_ops/kernels/ take a `const ParallelFor&` and call it
// with the number of work units and a rough cost per unit. The TensorFlow op
// wrappers pass one backed by TF's intra-op thread pool
// (custom_ops/ops/tf_parallel.h); the standalone harness passes SerialFor().
#ifndef TFDET_KERNELS_PARALLEL_H_
#define TFDET_KERNELS_PARALLEL_H_

#include <cstdint>
#include <functional>

namespace tfdet {

// fn(begin, end) must process units [begin, end) and may run concurrently
// with other calls on disjoint ranges.
using ParallelFor = std::function<void(
    int64_t num_units, int64_t cost_per_unit,
    const std::function<void(int64_t begin, int64_t end)>& fn)>;

inline ParallelFor SerialFor() {
  return [](int64_t n, int64_t, const std::function<void(int64_t, int64_t)>& fn) {
    if (n > 0) fn(0, n);
  };
}

}  // namespace tfdet

#endif  // TFDET_KERNELS_PARALLEL_H_
