// Cross-entropy of bilinearly upsampled logits, without the upsampled tensor: CPU kernels
// (C++14, OpenMP).
//
// logits [B, C, h, w] are upsampled to the label size [H, W] (H >= h, W >= w) and each labelled
// pixel p contributes nll_p = log(sum_c exp(z_pc)) - z_p,target. The upsampled value is, as in
// Jittor's nn.interpolate (first along H, then along W),
//   v_c(col)  = (1 - wy[y]) * logits[b, c, ylo[y], col] + wy[y] * logits[b, c, ylo[y] + 1, col]
//   z_pc      = (1 - wx[x]) * v_c(xlo[x]) + wx[x] * v_c(xlo[x] + 1)
// where a neighbour past the last row or column counts as 0 (its weight is 0 up to rounding).
// The tables ylo, wy, xlo, wx come from losses.py. target is the class, or -1 for an ignored pixel.
//
//   forward:   out[0] = sum over labelled pixels of nll_p (partial sums per output row in double,
//              added in row order)
//   backward:  dlogits = g * sum_p (softmax(z_p) - onehot(target_p)) * (bilinear weight of p on the
//              logit), g = the gradient of that sum. Each thread owns whole rows of dlogits and
//              recomputes the output rows that touch them (at most two per output row), so
//              nothing is scattered across threads and the result does not depend on the number
//              of threads.
#pragma once
#include <algorithm>
#include <cmath>
#include <vector>

namespace upsample_nll {

// z [C, W]: the upsampled logits of output row y of image b.
template <typename T>
inline void upsampled_row(const T* logits, const int* ylo, const T* wy, const int* xlo, const T* wx, int b, int y,
                          int C, int h, int w, int W, T* v, T* z) {
  const int y0 = ylo[y], y1 = y0 + 1;
  const T fy = wy[y], ny = T(1) - fy;
  for (int c = 0; c < C; ++c) {
    const T* r0 = logits + (((long)b * C + c) * h + y0) * w;
    T* vc = v + (long)c * (w + 1);
    if (y1 < h) {
      const T* r1 = r0 + w;
      for (int j = 0; j < w; ++j) vc[j] = fy * r1[j] + ny * r0[j];
    } else {
      for (int j = 0; j < w; ++j) vc[j] = ny * r0[j];
    }
    vc[w] = T(0);  // the column past the last one
    T* zc = z + (long)c * W;
    for (int x = 0; x < W; ++x) {
      const T fx = wx[x];
      zc[x] = fx * vc[xlo[x] + 1] + (T(1) - fx) * vc[xlo[x]];
    }
  }
}

// m = max_c z[c * stride], e = sum_c exp(z[c * stride] - m): the log-softmax of one pixel is z - m - log(e).
template <typename T>
inline void max_and_sum_exp(const T* z, long stride, int C, T& m, T& e) {
  m = z[0];
  for (int c = 1; c < C; ++c) m = std::max(m, z[c * stride]);
  e = 0;
  for (int c = 0; c < C; ++c) e += std::exp(z[c * stride] - m);
}

template <typename T>
void forward(const T* logits, const int* target, const int* ylo, const T* wy, const int* xlo, const T* wx, T* out,
             int B, int C, int h, int w, int H, int W) {
  std::vector<double> rows((size_t)B * H, 0.0);
#pragma omp parallel
  {
    std::vector<T> v((size_t)C * (w + 1)), z((size_t)C * W);
#pragma omp for schedule(static)
    for (long row = 0; row < (long)B * H; ++row) {
      const int b = (int)(row / H), y = (int)(row % H);
      upsampled_row(logits, ylo, wy, xlo, wx, b, y, C, h, w, W, v.data(), z.data());
      const int* t = target + row * W;
      double s = 0;
      for (int x = 0; x < W; ++x) {
        if (t[x] < 0) continue;
        T m, e;
        max_and_sum_exp(z.data() + x, W, C, m, e);
        s += (double)(std::log(e) - (z[(long)t[x] * W + x] - m));
      }
      rows[row] = s;
    }
  }
  double total = 0;
  for (double s : rows) total += s;
  out[0] = (T)total;
}

template <typename T>
void backward(const T* logits, const int* target, const int* ylo, const T* wy, const int* xlo, const T* wx,
              const T* grad, T* dlogits, int B, int C, int h, int w, int H, int W) {
  const double g = (double)grad[0];
#pragma omp parallel
  {
    std::vector<T> v((size_t)C * (w + 1)), z((size_t)C * W);
    std::vector<double> acc((size_t)C * w), hrow((size_t)C * (w + 1));
#pragma omp for schedule(static)
    for (long row = 0; row < (long)B * h; ++row) {  // one row i of dlogits[b, :, i, :] per iteration
      const int b = (int)(row / h), i = (int)(row % h);
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int y = 0; y < H; ++y) {
        const int y0 = ylo[y];
        if (y0 != i && y0 + 1 != i) continue;
        const double wrow = y0 == i ? 1.0 - (double)wy[y] : (double)wy[y];
        upsampled_row(logits, ylo, wy, xlo, wx, b, y, C, h, w, W, v.data(), z.data());
        std::fill(hrow.begin(), hrow.end(), 0.0);
        const int* t = target + ((long)b * H + y) * W;
        for (int x = 0; x < W; ++x) {
          if (t[x] < 0) continue;
          T m, e;
          max_and_sum_exp(z.data() + x, W, C, m, e);
          const double inv = 1.0 / (double)e, fx = (double)wx[x];
          const int x0 = xlo[x];
          for (int c = 0; c < C; ++c) {
            double q = (double)std::exp(z[(long)c * W + x] - m) * inv - (c == t[x] ? 1.0 : 0.0);
            double* hc = hrow.data() + (long)c * (w + 1);
            hc[x0] += q * (1.0 - fx);
            hc[x0 + 1] += q * fx;  // hc[w] (past the last column) is dropped
          }
        }
        for (int c = 0; c < C; ++c)
          for (int j = 0; j < w; ++j) acc[(long)c * w + j] += wrow * hrow[(long)c * (w + 1) + j];
      }
      for (int c = 0; c < C; ++c) {
        T* d = dlogits + (((long)b * C + c) * h + i) * w;
        for (int j = 0; j < w; ++j) d[j] = (T)(g * acc[(long)c * w + j]);
      }
    }
  }
}

}  // namespace upsample_nll
