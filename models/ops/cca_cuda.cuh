// Criss-cross attention: CUDA kernels (C++14; plain pointers and sizes).
//
// The same source is compiled three ways: by Jittor (jt.code cuda_header, then
// cca_*_cuda launchers called from cuda_src), by nvcc as a compile check, and
// by CuPy/NVRTC (the __global__ kernels only; the host launchers are skipped
// under __CUDACC_RTC__). Layout and the two primitives are those of
// models/cca_cpu.h:
//   weight(P, Q) -> E [B, H+W-1, H, W]
//       E[i, y, x]      = sum_c P[c, y, x] * Q[c, y, i]
//       E[s(j,y), y, x] = sum_c P[c, y, x] * Q[c, j, x],  s(j, y) = W + j - (j > y)
//   map<TRANSPOSED>(A, V) -> O [B, C, H, W]
//       O[c, y, x] = sum_i V[c, y, i] * A[i, y, x] + sum_{j!=y} V[c, j, x] * A[s(j,y), y, x]      (false)
//       O[c, y, x] = sum_i V[c, y, i] * A[x, y, i] + sum_{j!=y} V[c, j, x] * A[s(y,j), j, x]      (true)
// One thread per output element, x fastest so that warps read contiguous
// memory; float32 accumulation for float and half, float64 for double.
#pragma once
#include <cuda_fp16.h>

namespace cca_cuda {

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

#ifndef __CUDACC_RTC__
inline int cca_grid(long long total, int threads) {
  long long blocks = (total + threads - 1) / threads;
  return (int)(blocks < 65535LL * 32 ? blocks : 65535LL * 32);
}

template <typename T>
void cca_weight_cuda(const T* P, const T* Q, T* E, int B, int C, int H, int W, cudaStream_t stream = 0) {
  const long long total = (long long)B * (H + W - 1) * H * W;
  if (total == 0) return;
  cca_weight_kernel<T><<<cca_grid(total, 256), 256, 0, stream>>>(P, Q, E, B, C, H, W);
}

template <typename T, bool TRANSPOSED>
void cca_map_cuda(const T* A, const T* V, T* O, int B, int C, int H, int W, cudaStream_t stream = 0) {
  const long long total = (long long)B * C * H * W;
  if (total == 0) return;
  cca_map_kernel<T, TRANSPOSED><<<cca_grid(total, 256), 256, 0, stream>>>(A, V, O, B, C, H, W);
}
#endif

}  // namespace cca_cuda
