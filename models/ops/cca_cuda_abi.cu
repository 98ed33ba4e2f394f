// C entry points to the kernels of cca_cuda.cuh, for the tools that run them outside Jittor:
// benchmarks/gpu_check.py (built with nvcc -shared, called with PyTorch's CUDA pointers) and the
// tests' CPU emulation of CUDA (built with g++ -include tests/cuda_emu.h, called with host pointers).
// cca_cuda_weight/cca_cuda_map are the 2-D op on [B, C, H, W], cca_cuda_weight3d/cca_cuda_map3d the
// 3-D op on clips [B, C, T, H, W]. dtype: 0 float32, 1 float16, 2 float64. Each returns the
// cudaError_t of the launches, or -1 for an unknown dtype.
#include "cca_cuda.cuh"

namespace {

template <typename T>
int weight_as(const void* P, const void* Q, void* E, int B, int C, int H, int W, void* stream) {
  return (int)cca_cuda::weight<T>((const T*)P, (const T*)Q, (T*)E, B, C, H, W, (cudaStream_t)stream);
}

template <typename T>
int map_as(int transposed, const void* A, const void* V, void* O, int B, int C, int H, int W, void* stream) {
  if (transposed)
    return (int)cca_cuda::map<T, true>((const T*)A, (const T*)V, (T*)O, B, C, H, W, (cudaStream_t)stream);
  return (int)cca_cuda::map<T, false>((const T*)A, (const T*)V, (T*)O, B, C, H, W, (cudaStream_t)stream);
}

template <typename T>
int weight3d_as(const void* P, const void* Q, void* E, int B, int C, int T_, int H, int W, void* stream) {
  return (int)cca_cuda::weight3d<T>((const T*)P, (const T*)Q, (T*)E, B, C, T_, H, W, (cudaStream_t)stream);
}

template <typename T>
int map3d_as(int transposed, const void* A, const void* V, void* O, int B, int C, int T_, int H, int W,
             void* stream) {
  if (transposed)
    return (int)cca_cuda::map3d<T, true>((const T*)A, (const T*)V, (T*)O, B, C, T_, H, W, (cudaStream_t)stream);
  return (int)cca_cuda::map3d<T, false>((const T*)A, (const T*)V, (T*)O, B, C, T_, H, W, (cudaStream_t)stream);
}

}  // namespace

extern "C" int cca_cuda_weight(int dtype, const void* P, const void* Q, void* E, int B, int C, int H, int W,
                               void* stream) {
  switch (dtype) {
    case 0: return weight_as<float>(P, Q, E, B, C, H, W, stream);
    case 1: return weight_as<__half>(P, Q, E, B, C, H, W, stream);
    case 2: return weight_as<double>(P, Q, E, B, C, H, W, stream);
    default: return -1;
  }
}

extern "C" int cca_cuda_map(int dtype, int transposed, const void* A, const void* V, void* O, int B, int C, int H,
                            int W, void* stream) {
  switch (dtype) {
    case 0: return map_as<float>(transposed, A, V, O, B, C, H, W, stream);
    case 1: return map_as<__half>(transposed, A, V, O, B, C, H, W, stream);
    case 2: return map_as<double>(transposed, A, V, O, B, C, H, W, stream);
    default: return -1;
  }
}

extern "C" int cca_cuda_weight3d(int dtype, const void* P, const void* Q, void* E, int B, int C, int T, int H, int W,
                                 void* stream) {
  switch (dtype) {
    case 0: return weight3d_as<float>(P, Q, E, B, C, T, H, W, stream);
    case 1: return weight3d_as<__half>(P, Q, E, B, C, T, H, W, stream);
    case 2: return weight3d_as<double>(P, Q, E, B, C, T, H, W, stream);
    default: return -1;
  }
}

extern "C" int cca_cuda_map3d(int dtype, int transposed, const void* A, const void* V, void* O, int B, int C, int T,
                              int H, int W, void* stream) {
  switch (dtype) {
    case 0: return map3d_as<float>(transposed, A, V, O, B, C, T, H, W, stream);
    case 1: return map3d_as<__half>(transposed, A, V, O, B, C, T, H, W, stream);
    case 2: return map3d_as<double>(transposed, A, V, O, B, C, T, H, W, stream);
    default: return -1;
  }
}
