// The earlier criss-cross attention CUDA kernels of this project, kept only so
// that benchmarks/gpu_check.py can time them against models/ops/cca_cuda.cuh. This is the design
// of the official CCNet and of mmcv before its einsum rewrite (mmcv PRs #1186/#1201): one thread per
// output element, no shared memory, 64-bit index arithmetic, and the transposed map reading
// a[x*HW + y*W + i], a different memory sector per lane of a warp. Compiled by CuPy (NVRTC).
// Layout and functions are those of models/ops/cca_cuda.cuh:
//   cca_weight_kernel<T>(P, Q, E, B, C, H, W)         E = weight(P, Q)      one thread per E element
//   cca_map_kernel<T, TRANSPOSED>(A, V, O, B, C, H, W) O = map(A, V)         one thread per O element
// launched with 256 threads and min(ceil(n / 256), 65535 * 32) blocks (grid-stride loops).
#pragma once
#include <cuda_fp16.h>

namespace cca_cuda_naive {

template <typename T> struct Acc { typedef float type; };
template <> struct Acc<double> { typedef double type; };

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
template <typename T> __device__ __forceinline__ T from_acc(float v) { return (T)v; }
template <> __device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half(v); }
template <typename T> __device__ __forceinline__ T from_acc(double v) { return (T)v; }

__device__ __forceinline__ int col_slot(int j, int y, int W) { return W + j - (j > y); }

template <typename T>
__global__ void cca_weight_kernel(const T* __restrict__ P, const T* __restrict__ Q, T* __restrict__ E,
                                  int B, int C, int H, int W) {
  typedef typename Acc<T>::type acc_t;
  const long long HW = (long long)H * W, L = H + W - 1;
  const long long total = B * L * HW;
  for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
       idx += (long long)gridDim.x * blockDim.x) {
    const int x = (int)(idx % W);
    const int y = (int)((idx / W) % H);
    const int z = (int)((idx / HW) % L);
    const long long b = idx / (L * HW);
    const T* p = P + b * C * HW + y * W + x;
    const T* q;
    if (z < W) {
      q = Q + b * C * HW + y * W + z;
    } else {
      const int i = z - W;
      const int j = i < y ? i : i + 1;
      q = Q + b * C * HW + j * W + x;
    }
    acc_t s = 0;
    for (int c = 0; c < C; ++c) s += to_acc(p[c * HW]) * to_acc(q[c * HW]);
    E[idx] = from_acc<T>(s);
  }
}

template <typename T, bool TRANSPOSED>
__global__ void cca_map_kernel(const T* __restrict__ A, const T* __restrict__ V, T* __restrict__ O,
                               int B, int C, int H, int W) {
  typedef typename Acc<T>::type acc_t;
  const long long HW = (long long)H * W, L = H + W - 1;
  const long long total = B * C * HW;
  for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
       idx += (long long)gridDim.x * blockDim.x) {
    const int x = (int)(idx % W);
    const int y = (int)((idx / W) % H);
    const long long bc = idx / HW;
    const long long b = bc / C;
    const T* a = A + b * L * HW;
    const T* v = V + bc * HW;
    acc_t s = 0;
    for (int i = 0; i < W; ++i) {
      const T w = TRANSPOSED ? a[x * HW + y * W + i] : a[i * HW + y * W + x];
      s += to_acc(v[y * W + i]) * to_acc(w);
    }
    for (int j = 0; j < H; ++j) {
      if (j == y) continue;
      const T w = TRANSPOSED ? a[col_slot(y, j, W) * HW + j * W + x] : a[col_slot(j, y, W) * HW + y * W + x];
      s += to_acc(v[j * W + x]) * to_acc(w);
    }
    O[idx] = from_acc<T>(s);
  }
}
}  // namespace cca_cuda_naive
