// BatchNorm in training mode, with the activation and residual add that follow it: CPU kernels
// (C++14, OpenMP).
//
// x is [N, C, M] (M = H * W, contiguous). For channel c, over its K = N * M values:
//   stats:     mean[c] = sum x / K,  var[c] = max(sum x^2 / K - mean^2, 0) (biased, as Jittor's)
//   forward:   y = act(x * scale[c] + shift[c] (+ residual))
//   backward:  g = dy * act'(y) (written out when there is an activation: the residual's gradient),
//              sums[c] = (sum g, sum g * (x - mean)), then
//              dx = a[c] * g + b[c] * x + d[c]   (coefficients from the sums, see batchnorm.py)
// ACT: 0 none, 1 ReLU, 2 leaky ReLU (slope > 0, so act'(y) follows the sign of y).
// Each channel is reduced by one thread, in a fixed order, so the results do not depend on the
// number of threads. Sums are kept in double, from partial sums of at most kBlock values.
#pragma once
#include <algorithm>

namespace bn_cpu {

constexpr long kBlock = 2048;

template <typename T, int ACT>
inline T act(T v, T slope) {
  if (ACT == 1) return v > 0 ? v : T(0);
  if (ACT == 2) return v > 0 ? v : v * slope;
  return v;
}

template <typename T, int ACT>
inline T act_grad(T g, T y, T slope) {
  if (ACT == 1) return y > 0 ? g : T(0);
  if (ACT == 2) return y > 0 ? g : g * slope;
  return g;
}

// out [2, C]: mean and (biased) variance per channel
template <typename T>
void stats(const T* x, T* out, int N, int C, long M) {
  const double count = (double)N * (double)M;
#pragma omp parallel for schedule(static)
  for (int c = 0; c < C; ++c) {
    double s = 0, q = 0;
    for (int n = 0; n < N; ++n) {
      const T* p = x + ((long)n * C + c) * M;
      for (long start = 0; start < M; start += kBlock) {
        const long end = std::min(M, start + kBlock);
        T bs = 0, bq = 0;
#pragma omp simd reduction(+ : bs, bq)
        for (long i = start; i < end; ++i) {
          bs += p[i];
          bq += p[i] * p[i];
        }
        s += bs;
        q += bq;
      }
    }
    const double mean = s / count;
    out[c] = (T)mean;
    out[C + c] = (T)std::max(q / count - mean * mean, 0.0);
  }
}

// y = act(x * coef[0, c] + coef[1, c] (+ res))
template <typename T, int ACT, bool RES>
void forward(const T* x, const T* coef, const T* res, T* y, T slope, int N, int C, long M) {
#pragma omp parallel for schedule(static)
  for (long nc = 0; nc < (long)N * C; ++nc) {
    const T scale = coef[nc % C], shift = coef[C + nc % C];
    const T* p = x + nc * M;
    const T* r = RES ? res + nc * M : nullptr;
    T* o = y + nc * M;
#pragma omp simd
    for (long i = 0; i < M; ++i) o[i] = act<T, ACT>(p[i] * scale + shift + (RES ? r[i] : T(0)), slope);
  }
}

// out [2, C]: sum g and sum g * (x - mean) per channel, g = dy * act'(y); g itself into g_out (ACT > 0)
template <typename T, int ACT>
void grad_sums(const T* dy, const T* y, const T* x, const T* mean, T* out, T* g_out, T slope, int N, int C,
               long M) {
#pragma omp parallel for schedule(static)
  for (int c = 0; c < C; ++c) {
    double s = 0, q = 0;
    const T mu = mean[c];
    for (int n = 0; n < N; ++n) {
      const long off = ((long)n * C + c) * M;
      for (long start = 0; start < M; start += kBlock) {
        const long end = std::min(M, start + kBlock);
        T bs = 0, bq = 0;
#pragma omp simd reduction(+ : bs, bq)
        for (long i = off + start; i < off + end; ++i) {
          const T g = act_grad<T, ACT>(dy[i], ACT ? y[i] : T(0), slope);
          if (ACT) g_out[i] = g;
          bs += g;
          bq += g * (x[i] - mu);
        }
        s += bs;
        q += bq;
      }
    }
    out[c] = (T)s;
    out[C + c] = (T)q;
  }
}

// dx = coef[0, c] * g + coef[1, c] * x + coef[2, c]
template <typename T>
void grad_input(const T* g, const T* x, const T* coef, T* dx, int N, int C, long M) {
#pragma omp parallel for schedule(static)
  for (long nc = 0; nc < (long)N * C; ++nc) {
    const int c = (int)(nc % C);
    const T a = coef[c], b = coef[C + c], d = coef[2 * C + c];
    const T* gp = g + nc * M;
    const T* p = x + nc * M;
    T* o = dx + nc * M;
#pragma omp simd
    for (long i = 0; i < M; ++i) o[i] = a * gp[i] + b * p[i] + d;
  }
}

}  // namespace bn_cpu
