// Pointwise (1x1) and depthwise convolutions on the CPU: C++14, OpenMP, NCHW, contiguous.
//
// pointwise (1x1, stride 1, no padding), float32: per image one row-major sgemm of oneDNN
//   forward:   Y_b = W X_b (+ bias)          W [Co, Ci], X_b [Ci, M], Y_b [Co, M], M = H * W
//   backward:  dX_b = W^T dY_b,  dW = sum_b dY_b X_b^T (images in order),  dbias = sum dY
// depthwise (groups = channels, stride 1, square kernel K, dilation d, padding p), float32/float64:
//   correlate: out[i][j] = bias + sum_{u,v} w[u][v] * in[i - p + d u][j - p + d v]  (0 outside)
//   backward:  dX is the same correlation of dY with the flipped kernel and padding d (K - 1) - p;
//              dw[c][u][v] = sum_{b,i,j} dY[b][c][i][j] * X[b][c][i - p + d u][j - p + d v]
// Each output element and each channel's weight gradient is computed by one thread in a fixed
// order, so the results do not depend on the number of threads. Weight and bias gradients are
// summed in double, from row sums.
#pragma once
#include <algorithm>
#include <cstdint>
#include <stdexcept>

// oneDNN's row-major sgemm (dnnl.h: dnnl_status_t dnnl_sgemm(...), dnnl_dim_t = int64_t, 0 = success),
// declared here rather than included: the header is on the compiler's path only where oneDNN is a
// system package, while the library itself is always loaded by Jittor's oneDNN ops (kernel_path in
// conv.py checks that they are).
extern "C" int dnnl_sgemm(char transa, char transb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

namespace conv_cpu {

inline void sgemm(char ta, char tb, long m, long n, long k, const float* a, long lda, const float* b, long ldb,
                  float beta, float* c, long ldc) {
  if (dnnl_sgemm(ta, tb, m, n, k, 1.f, a, lda, b, ldb, beta, c, ldc) != 0)
    throw std::runtime_error("conv_cpu: oneDNN's sgemm failed");
}

// y [B, Co, M] = w [Co, Ci] x [B, Ci, M] (+ bias [Co], or nullptr)
inline void pointwise_forward(const float* x, const float* w, const float* bias, float* y, int B, int Ci, int Co,
                              long M) {
  for (int b = 0; b < B; ++b)
    sgemm('N', 'N', Co, M, Ci, w, Ci, x + (long)b * Ci * M, M, 0.f, y + (long)b * Co * M, M);
  if (bias) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; ++b)
      for (int o = 0; o < Co; ++o) {
        float* row = y + ((long)b * Co + o) * M;
        const float v = bias[o];
#pragma omp simd
        for (long i = 0; i < M; ++i) row[i] += v;
      }
  }
}

// dx [B, Ci, M] = w^T dy
inline void pointwise_grad_input(const float* dy, const float* w, float* dx, int B, int Ci, int Co, long M) {
  for (int b = 0; b < B; ++b)
    sgemm('T', 'N', Ci, M, Co, w, Ci, dy + (long)b * Co * M, M, 0.f, dx + (long)b * Ci * M, M);
}

// dw [Co, Ci] = sum_b dy_b x_b^T
inline void pointwise_grad_weight(const float* dy, const float* x, float* dw, int B, int Ci, int Co, long M) {
  for (int b = 0; b < B; ++b)
    sgemm('N', 'T', Co, Ci, M, dy + (long)b * Co * M, M, x + (long)b * Ci * M, M, b ? 1.f : 0.f, dw, Ci);
}

// dbias [C] = sum over images and positions of dy [B, C, M]
template <typename T>
void bias_grad(const T* dy, T* dbias, int B, int C, long M) {
#pragma omp parallel for schedule(static)
  for (int c = 0; c < C; ++c) {
    double s = 0;
    for (int b = 0; b < B; ++b) {
      const T* p = dy + ((long)b * C + c) * M;
      T row = 0;
#pragma omp simd reduction(+ : row)
      for (long i = 0; i < M; ++i) row += p[i];
      s += row;
    }
    dbias[c] = (T)s;
  }
}

// out [B*C planes, Ho, Wo] from in [B*C, H, W]; plane q uses channel q % C of w [C, K, K].
// FLIP correlates with the kernel rotated by 180 degrees (the input gradient).
template <typename T, bool FLIP>
void depthwise_correlate(const T* in, const T* w, const T* bias, T* out, int B, int C, int H, int W, int Ho, int Wo,
                         int K, int dil, int pad) {
#pragma omp parallel for schedule(static)
  for (long q = 0; q < (long)B * C; ++q) {
    const int c = (int)(q % C);
    const T* src = in + q * H * W;
    const T* wc = w + (long)c * K * K;
    const T b0 = bias ? bias[c] : T(0);
    for (int i = 0; i < Ho; ++i) {
      T* row = out + (q * Ho + i) * Wo;
      for (int j = 0; j < Wo; ++j) row[j] = b0;
      for (int u = 0; u < K; ++u) {
        const int r = i - pad + dil * u;
        if (r < 0 || r >= H) continue;
        const T* srow = src + (long)r * W;
        for (int v = 0; v < K; ++v) {
          const T wv = FLIP ? wc[(K - 1 - u) * K + (K - 1 - v)] : wc[u * K + v];
          const int off = dil * v - pad;
          const int j0 = std::max(0, -off), j1 = std::min(Wo, W - off);
#pragma omp simd
          for (int j = j0; j < j1; ++j) row[j] += wv * srow[j + off];
        }
      }
    }
  }
}

// dw [C, K, K] = sum over images and outputs of dy [B, C, Ho, Wo] * the input x [B, C, H, W] under each tap
template <typename T>
void depthwise_grad_weight(const T* dy, const T* x, T* dw, int B, int C, int H, int W, int Ho, int Wo, int K, int dil,
                           int pad) {
#pragma omp parallel for schedule(static)
  for (int c = 0; c < C; ++c) {
    for (int u = 0; u < K; ++u) {
      for (int v = 0; v < K; ++v) {
        const int off = dil * v - pad;
        const int j0 = std::max(0, -off), j1 = std::min(Wo, W - off);
        double s = 0;
        for (int b = 0; b < B; ++b) {
          const T* xs = x + ((long)b * C + c) * H * W;
          const T* gs = dy + ((long)b * C + c) * Ho * Wo;
          for (int i = 0; i < Ho; ++i) {
            const int r = i - pad + dil * u;
            if (r < 0 || r >= H) continue;
            const T* g = gs + (long)i * Wo;
            const T* xr = xs + (long)r * W + off;
            T row = 0;
#pragma omp simd reduction(+ : row)
            for (int j = j0; j < j1; ++j) row += g[j] * xr[j];
            s += row;
          }
        }
        dw[((long)c * K + u) * K + v] = (T)s;
      }
    }
  }
}

}  // namespace conv_cpu
