// RoIAlign CUDA kernels. See roi_align_cuda.h and roi_align_cpu.h.
//
// Forward: one thread per output element (roi, bin_y, bin_x, channel);
// consecutive threads read consecutive channels of NHWC memory. Backward:
// one thread per incoming gradient element, scattering with float atomicAdd
// into the feature gradient (float) or a float workspace (half), which is
// then converted.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/roi_align_cuda.h"

namespace tfdet {
namespace {

constexpr int kThreads = 256;

template <typename T>
struct LevelPack {
  const T* data[kRoiAlignCudaMaxLevels];
  float* grad[kRoiAlignCudaMaxLevels];  // float accumulation targets
  int height[kRoiAlignCudaMaxLevels];
  int width[kRoiAlignCudaMaxLevels];
  float scale[kRoiAlignCudaMaxLevels];
};

__device__ __forceinline__ float ToFloat(float v) { return v; }
__device__ __forceinline__ float ToFloat(__half v) { return __half2float(v); }
template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half FromFloat<__half>(float v) { return __float2half(v); }

// Level of RoI r, or -1 when its level or batch index is out of range.
__device__ __forceinline__ int RoiLevel(int64_t r, const int32_t* batch_indices,
                                        const int32_t* roi_levels, int num_levels, int batch) {
  const int level = roi_levels ? roi_levels[r] : 0;
  if (level < 0 || level >= num_levels) return -1;
  const int b = batch_indices[r];
  return (b < 0 || b >= batch) ? -1 : level;
}

template <typename T>
__global__ void ForwardKernel(LevelPack<T> pack, int num_levels, int batch, int channels,
                              const float* rois, const int32_t* batch_indices,
                              const int32_t* roi_levels, int64_t total, RoiAlignAttrs attrs,
                              T* output) {
  const int ph = attrs.pooled_height, pw = attrs.pooled_width;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int c = static_cast<int>(idx % channels);
    int64_t t = idx / channels;
    const int j = static_cast<int>(t % pw);
    t /= pw;
    const int i = static_cast<int>(t % ph);
    const int64_t r = t / ph;
    float acc = 0.f;
    const int level = RoiLevel(r, batch_indices, roi_levels, num_levels, batch);
    if (level >= 0) {
      const int height = pack.height[level], width = pack.width[level];
      const RoiGeometry geo = ComputeRoiGeometry(rois + 4 * r, pack.scale[level], attrs);
      const T* image = pack.data[level] +
                       static_cast<int64_t>(batch_indices[r]) * height * width * channels + c;
      for (int iy = 0; iy < geo.grid_h; ++iy) {
        const AxisInterp y =
            InterpAxis(RoiSampleCoord(geo.start_y, geo.bin_h, i, iy, geo.grid_h), height);
        if (y.w_low == 0.f && y.w_high == 0.f) continue;
        const T* row_low = image + static_cast<int64_t>(y.low) * width * channels;
        const T* row_high = image + static_cast<int64_t>(y.high) * width * channels;
        for (int ix = 0; ix < geo.grid_w; ++ix) {
          const AxisInterp x =
              InterpAxis(RoiSampleCoord(geo.start_x, geo.bin_w, j, ix, geo.grid_w), width);
          if (x.w_low == 0.f && x.w_high == 0.f) continue;
          const int64_t xl = static_cast<int64_t>(x.low) * channels;
          const int64_t xh = static_cast<int64_t>(x.high) * channels;
          acc += y.w_low * (x.w_low * ToFloat(row_low[xl]) + x.w_high * ToFloat(row_low[xh])) +
                 y.w_high * (x.w_low * ToFloat(row_high[xl]) + x.w_high * ToFloat(row_high[xh]));
        }
      }
      const int count = geo.grid_h * geo.grid_w;
      if (count > 0) acc /= static_cast<float>(count);
    }
    output[idx] = FromFloat<T>(acc);
  }
}

template <typename T>
__global__ void BackwardKernel(LevelPack<T> pack, int num_levels, int batch, int channels,
                               const T* grads, const float* rois, const int32_t* batch_indices,
                               const int32_t* roi_levels, int64_t total, RoiAlignAttrs attrs) {
  const int ph = attrs.pooled_height, pw = attrs.pooled_width;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int c = static_cast<int>(idx % channels);
    int64_t t = idx / channels;
    const int j = static_cast<int>(t % pw);
    t /= pw;
    const int i = static_cast<int>(t % ph);
    const int64_t r = t / ph;
    const int level = RoiLevel(r, batch_indices, roi_levels, num_levels, batch);
    if (level < 0) continue;
    const int height = pack.height[level], width = pack.width[level];
    const RoiGeometry geo = ComputeRoiGeometry(rois + 4 * r, pack.scale[level], attrs);
    const int count = geo.grid_h * geo.grid_w;
    if (count <= 0) continue;
    const float g = ToFloat(grads[idx]) / static_cast<float>(count);
    float* image =
        pack.grad[level] + static_cast<int64_t>(batch_indices[r]) * height * width * channels + c;
    for (int iy = 0; iy < geo.grid_h; ++iy) {
      const AxisInterp y =
          InterpAxis(RoiSampleCoord(geo.start_y, geo.bin_h, i, iy, geo.grid_h), height);
      if (y.w_low == 0.f && y.w_high == 0.f) continue;
      float* row_low = image + static_cast<int64_t>(y.low) * width * channels;
      float* row_high = image + static_cast<int64_t>(y.high) * width * channels;
      for (int ix = 0; ix < geo.grid_w; ++ix) {
        const AxisInterp x =
            InterpAxis(RoiSampleCoord(geo.start_x, geo.bin_w, j, ix, geo.grid_w), width);
        if (x.w_low == 0.f && x.w_high == 0.f) continue;
        const int64_t xl = static_cast<int64_t>(x.low) * channels;
        const int64_t xh = static_cast<int64_t>(x.high) * channels;
        atomicAdd(row_low + xl, g * y.w_low * x.w_low);
        atomicAdd(row_low + xh, g * y.w_low * x.w_high);
        atomicAdd(row_high + xl, g * y.w_high * x.w_low);
        atomicAdd(row_high + xh, g * y.w_high * x.w_high);
      }
    }
  }
}

__global__ void FloatToHalfKernel(const float* in, __half* out, int64_t n) {
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < n;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[k] = __float2half(in[k]);
  }
}

int NumBlocks(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>(blocks, 1), 65535 * 8));
}

template <typename T>
cudaError_t PackLevels(const RoiAlignLevelCuda<T>* levels, int num_levels, LevelPack<T>* pack) {
  if (num_levels < 1 || num_levels > kRoiAlignCudaMaxLevels) return cudaErrorInvalidValue;
  *pack = LevelPack<T>{};
  for (int l = 0; l < num_levels; ++l) {
    pack->data[l] = levels[l].data;
    pack->height[l] = levels[l].height;
    pack->width[l] = levels[l].width;
    pack->scale[l] = levels[l].spatial_scale;
  }
  return cudaSuccess;
}

int64_t PooledElements(int64_t num_rois, const RoiAlignAttrs& attrs, int channels) {
  return num_rois * attrs.pooled_height * attrs.pooled_width * channels;
}

size_t AlignUp(size_t bytes) { return (bytes + 255) / 256 * 256; }

}  // namespace

template <typename T>
int RoiAlignForwardCuda(const RoiAlignLevelCuda<T>* levels, int num_levels, int batch,
                                int channels, const float* rois, const int32_t* batch_indices,
                                const int32_t* roi_levels, int64_t num_rois,
                                const RoiAlignAttrs& attrs, T* output, cudaStream_t stream) {
  LevelPack<T> pack;
  cudaError_t err = PackLevels(levels, num_levels, &pack);
  if (err != cudaSuccess) return err;
  const int64_t total = PooledElements(num_rois, attrs, channels);
  if (total == 0) return cudaSuccess;
  ForwardKernel<T><<<NumBlocks(total), kThreads, 0, stream>>>(
      pack, num_levels, batch, channels, rois, batch_indices, roi_levels, total, attrs, output);
  return cudaGetLastError();
}

template <typename T>
size_t RoiAlignBackwardCudaWorkspaceBytes(const int64_t* level_elements, int num_levels) {
  if (sizeof(T) == sizeof(float)) return 0;
  size_t bytes = 0;
  for (int l = 0; l < num_levels; ++l) bytes += AlignUp(sizeof(float) * level_elements[l]);
  return bytes;
}

template <typename T>
int RoiAlignBackwardCuda(const RoiAlignLevelCuda<T>* levels, int num_levels, int batch,
                                 int channels, const T* grads, const float* rois,
                                 const int32_t* batch_indices, const int32_t* roi_levels,
                                 int64_t num_rois, const RoiAlignAttrs& attrs, void* workspace,
                                 cudaStream_t stream) {
  LevelPack<T> pack;
  cudaError_t err = PackLevels(levels, num_levels, &pack);
  if (err != cudaSuccess) return err;
  constexpr bool kIsFloat = sizeof(T) == sizeof(float);
  char* ws = static_cast<char*>(workspace);
  for (int l = 0; l < num_levels; ++l) {
    const int64_t n = static_cast<int64_t>(batch) * levels[l].height * levels[l].width * channels;
    if (kIsFloat) {
      pack.grad[l] = reinterpret_cast<float*>(levels[l].grad);
    } else {
      pack.grad[l] = reinterpret_cast<float*>(ws);
      ws += AlignUp(sizeof(float) * n);
    }
    if (n > 0) {
      err = cudaMemsetAsync(pack.grad[l], 0, sizeof(float) * n, stream);
      if (err != cudaSuccess) return err;
    }
  }
  const int64_t total = PooledElements(num_rois, attrs, channels);
  if (total > 0) {
    BackwardKernel<T><<<NumBlocks(total), kThreads, 0, stream>>>(
        pack, num_levels, batch, channels, grads, rois, batch_indices, roi_levels, total, attrs);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  if (!kIsFloat) {
    for (int l = 0; l < num_levels; ++l) {
      const int64_t n =
          static_cast<int64_t>(batch) * levels[l].height * levels[l].width * channels;
      if (n == 0) continue;
      FloatToHalfKernel<<<NumBlocks(n), kThreads, 0, stream>>>(
          pack.grad[l], reinterpret_cast<__half*>(levels[l].grad), n);
    }
    err = cudaGetLastError();
  }
  return err;
}

int RoiAlignCopyToDevice(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return cudaSuccess;
  cudaError_t err = cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream);
  if (err == cudaSuccess) err = cudaStreamSynchronize(stream);
  return err;
}

const char* RoiAlignCudaErrorString(int error) {
  return cudaGetErrorString(static_cast<cudaError_t>(error));
}

#define TFDET_INSTANTIATE_ROI_ALIGN(T)                                                        \
  template int RoiAlignForwardCuda<T>(const RoiAlignLevelCuda<T>*, int, int, int,     \
                                              const float*, const int32_t*, const int32_t*,   \
                                              int64_t, const RoiAlignAttrs&, T*, cudaStream_t); \
  template size_t RoiAlignBackwardCudaWorkspaceBytes<T>(const int64_t*, int);                 \
  template int RoiAlignBackwardCuda<T>(const RoiAlignLevelCuda<T>*, int, int, int,    \
                                               const T*, const float*, const int32_t*,        \
                                               const int32_t*, int64_t, const RoiAlignAttrs&, \
                                               void*, cudaStream_t);

TFDET_INSTANTIATE_ROI_ALIGN(float)
TFDET_INSTANTIATE_ROI_ALIGN(__half)

#undef TFDET_INSTANTIATE_ROI_ALIGN

}  // namespace tfdet
