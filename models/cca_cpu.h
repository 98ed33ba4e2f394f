// Criss-cross attention: CPU kernels (C++14, OpenMP, GCC vector extensions).
//
// Layout as in the official CCNet op. For one image, with q, k, v of shape
// [C, H, W] and L = H + W - 1 attention positions per pixel (y, x):
//   slot i < W        : the pixel (y, i) of the same row, the pixel itself included
//   slot s(j, y) >= W : the pixel (j, x) of the same column, j != y, where
//                       s(j, y) = W + j - (j > y)
//
// Forward and backward reduce to two primitives:
//   weight(P, Q) -> E [L, H, W]
//       E[i, y, x]       = sum_c P[c, y, x] * Q[c, y, i]
//       E[s(j,y), y, x]  = sum_c P[c, y, x] * Q[c, j, x]
//   map<false>(A, V) -> O [C, H, W]  (the aggregation "ca_map")
//       O[c, y, x] = sum_i V[c, y, i] * A[i, y, x] + sum_{j!=y} V[c, j, x] * A[s(j,y), y, x]
//   map<true>(A, V) -> O [C, H, W]   (its transpose, used by the backward passes)
//       O[c, y, x] = sum_i V[c, y, i] * A[x, y, i] + sum_{j!=y} V[c, j, x] * A[s(y,j), j, x]
// so that
//   ca_weight:  E = weight(q, k);   dq = map<false>(dE, k);  dk = map<true>(dE, q)
//   ca_map:     O = map<false>(A, v); dA = weight(dO, v);    dv = map<true>(A, dO)
//
// Every output element is written exactly once (no atomics, deterministic).
// Each primitive has a row part and a column part, both computed with
// register tiles of SIMD vectors along the contiguous x axis:
//   row parts     [scalars x vectors]: broadcast scalars times vectors of x
//                 (map: channels; weight: positions i);
//   column parts  [vectors x vectors]: for one vector of x, rows times
//                 channels (map) or rows times positions (weight), read from
//                 copies laid out so that the tiles read them sequentially.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

namespace cca_cpu {

constexpr int kChannelGroup = 16;  // map: channels of V kept in L2 by one task
constexpr int kRowGroup = 6;       // map: row tiles per task

// Register tiles, sized to the vector register file (32 registers with
// AVX-512, 16 with AVX2): map column part rows x channels, weight column part
// rows x positions, row parts scalars x vectors. The AVX-512 numbers were
// measured with benchmarks/bench_cca_tiles.py on AMD EPYC family 25 (Zen 4)
// and Intel Xeon family 6 model 167 (no other tiling measurably faster on
// either); the AVX2 ones are sized to 16 registers, not measured.
// CCA_TILES (6 numbers, defined before this header) overrides them.
#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#ifndef CCA_TILES
#define CCA_TILES 4, 4, 4, 6, 6, 4
#endif
#else
constexpr int kVecBytes = 32;
#ifndef CCA_TILES
#define CCA_TILES 3, 3, 2, 5, 3, 3
#endif
#endif
constexpr int kTiles[6] = {CCA_TILES};
constexpr int kMapRows = kTiles[0], kMapChannels = kTiles[1];
constexpr int kWeightRows = kTiles[2], kWeightPositions = kTiles[3];
constexpr int kRowScalars = kTiles[4], kRowVectors = kTiles[5];

// A SIMD vector of T along x. FULL: the whole vector is inside the row
// (constant-size copies, which compile to plain vector loads and let the
// accumulators live in registers); otherwise only the first n lanes are.
template <typename T, bool FULL>
struct Lanes {
  typedef T vec __attribute__((vector_size(kVecBytes)));
  static constexpr int size = kVecBytes / (int)sizeof(T);
  int n;
  inline vec load(const T* p) const {
    vec v = {};
    std::memcpy(&v, p, (FULL ? size : n) * sizeof(T));
    return v;
  }
  inline void store(T* p, const vec& v) const { std::memcpy(p, &v, (FULL ? size : n) * sizeof(T)); }
};

// Vectors covering 0..W-1: when W is at least one vector wide, the last one
// is shifted left to end at W (overlapping the previous one) so that every
// vector is full; otherwise there is one vector of W lanes.
inline int vector_count(int W, int VL) { return (W + VL - 1) / VL; }
inline int vector_x(int xv, int W, int VL) { return W >= VL ? std::min(xv * VL, W - VL) : 0; }

// Makes the compiler keep v in a register. Without it GCC folds the reuse of
// a loaded vector into memory operands of every multiply-add that reads it
// (one load per FMA), and the loads, not the FMAs, set the pace.
template <typename V>
inline void in_register(V& v) {
#if defined(__x86_64__) || defined(__i386__)
  asm("" : "+v"(v));
#else
  (void)v;
#endif
}

// acc[t][k] += s[t][m * s_step] * v[m * v_step + xs[k]] for m < M: NS
// broadcast scalars times NV vectors, NS + NV loads per NS * NV FMAs.
template <int NS, int NV, typename T, bool FULL, typename Vec>
inline void scalar_vector_tile(Lanes<T, FULL> lanes, const T* const* s, long long s_step, const T* v,
                               long long v_step, const int* xs, int M, Vec (&acc)[NS][NV]) {
  for (int m = 0; m < M; ++m) {
    Vec r[NV];
    for (int k = 0; k < NV; ++k) {
      r[k] = lanes.load(v + m * v_step + xs[k]);
      in_register(r[k]);
    }
    for (int t = 0; t < NS; ++t) {
      Vec b = Vec{} + s[t][m * s_step];
      in_register(b);
      for (int k = 0; k < NV; ++k) acc[t][k] += b * r[k];
    }
  }
}

// acc[a][b] += x[a][m * x_step] * y[b][m * y_step] for m < M: NA times NB
// vectors, NA + NB loads per NA * NB FMAs.
template <int NA, int NB, typename T, bool FULL, typename Vec>
inline void vector_vector_tile(Lanes<T, FULL> lanes, const T* const* x, long long x_step, const T* const* y,
                               long long y_step, int M, Vec (&acc)[NA][NB]) {
  for (int m = 0; m < M; ++m) {
    Vec a[NA];
    for (int i = 0; i < NA; ++i) {
      a[i] = lanes.load(x[i] + m * x_step);
      in_register(a[i]);
    }
    for (int j = 0; j < NB; ++j) {
      Vec b = lanes.load(y[j] + m * y_step);
      in_register(b);
      for (int i = 0; i < NA; ++i) acc[i][j] += a[i] * b;
    }
  }
}

// Scratch memory aligned for vectors (std::vector<vec> is not, before C++17).
template <typename V>
struct AlignedBuffer {
  V* data = nullptr;
  explicit AlignedBuffer(size_t n) {
    void* p = nullptr;
    if (posix_memalign(&p, 64, n * sizeof(V) + 64) != 0) throw std::bad_alloc();
    data = static_cast<V*>(p);
  }
  ~AlignedBuffer() { free(data); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
};

// Column slot of pixel (j, x) in the attention of pixel (y, x), j != y.
static inline long long col_slot(int j, int y, int W) { return W + j - (j > y); }

// E = weight(P, Q); P, Q: [B, C, H, W], E: [B, H+W-1, H, W].
template <typename T, bool FULL>
void weight_lanes(const T* P, const T* Q, T* E, int B, int C, int H, int W) {
  typedef Lanes<T, FULL> Ln;
  typedef typename Ln::vec vec;
  const int VL = Ln::size, nxv = vector_count(W, VL);
  const int NS = kRowScalars, NV = kRowVectors, YB = kWeightRows, JB = kWeightPositions;
  const Ln lanes{FULL ? VL : W};
  const long long HW = (long long)H * W, L = H + W - 1;
#pragma omp parallel
  {
    // Row part, tasks (image, row): E[i, y, :] = sum_c Q[c, y, i] * P[c, y, :].
    // The rows y of P and Q (one per channel, HW apart) are first copied
    // next to each other, so that the tiles read them sequentially.
    AlignedBuffer<T> rows_p((size_t)C * W), rows_q((size_t)C * W);
#pragma omp for collapse(2) schedule(dynamic) nowait
    for (int b = 0; b < B; ++b)
      for (int y = 0; y < H; ++y) {
        T* Eb = E + b * L * HW;
        for (int c = 0; c < C; ++c) {
          std::memcpy(rows_p.data + (size_t)c * W, P + (b * C + c) * HW + y * W, W * sizeof(T));
          std::memcpy(rows_q.data + (size_t)c * W, Q + (b * C + c) * HW + y * W, W * sizeof(T));
        }
        for (int i0 = 0; i0 < W; i0 += NS) {
          const T* s[NS];
          for (int t = 0; t < NS; ++t) s[t] = rows_q.data + std::min(i0 + t, W - 1);  // clamped: computed, not stored
          for (int k0 = 0; k0 < nxv; k0 += NV) {
            int xs[NV];
            for (int k = 0; k < NV; ++k) xs[k] = vector_x(std::min(k0 + k, nxv - 1), W, VL);
            vec acc[NS][NV] = {};
            scalar_vector_tile<NS, NV>(lanes, s, W, rows_p.data, W, xs, C, acc);
            for (int t = 0; t < NS && i0 + t < W; ++t)
              for (int k = 0; k < NV && k0 + k < nxv; ++k) lanes.store(Eb + (i0 + t) * HW + y * W + xs[k], acc[t][k]);
          }
        }
      }
    // Column part, tasks (image, vector of x): E[s(j,y), y, x] = sum_c P[c, y, x] * Q[c, j, x].
    // The reduction runs over channels, HW apart in P and Q: too far for the
    // hardware prefetcher. Each task copies its vector of x of P into
    // [row][channel] order, and of Q the rows of one tile at a time (they
    // stay in L2 while all rows of P go by), so that the tiles read both
    // sequentially. The buffers are the thread's, reused.
    AlignedBuffer<vec> pbuf((size_t)H * C), qbuf((size_t)JB * C);
    vec* packed_p = pbuf.data;
    vec* packed_q = qbuf.data;
#pragma omp for collapse(2) schedule(dynamic)
    for (int b = 0; b < B; ++b)
      for (int xv = 0; xv < nxv; ++xv) {
        const T* Pb = P + b * C * HW;
        const T* Qb = Q + b * C * HW;
        T* Eb = E + b * L * HW;
        const int x0 = vector_x(xv, W, VL);
        for (int c = 0; c < C; ++c)
          for (int y = 0; y < H; ++y) packed_p[(size_t)y * C + c] = lanes.load(Pb + c * HW + y * W + x0);
        for (int j0 = 0; j0 < H; j0 += JB) {
          const T* q[JB];
          for (int t = 0; t < JB; ++t) {
            const int j = std::min(j0 + t, H - 1);  // clamped: computed, not stored
            for (int c = 0; c < C; ++c) packed_q[(size_t)t * C + c] = lanes.load(Qb + c * HW + j * W + x0);
            q[t] = (const T*)&packed_q[(size_t)t * C];
          }
          for (int y0 = 0; y0 < H; y0 += YB) {
            const T* p[YB];
            for (int r = 0; r < YB; ++r) p[r] = (const T*)&packed_p[(size_t)std::min(y0 + r, H - 1) * C];  // clamped rows: computed, not stored
            vec acc[YB][JB] = {};
            vector_vector_tile<YB, JB>(lanes, p, VL, q, VL, C, acc);
            for (int r = 0; r < YB && y0 + r < H; ++r)
              for (int t = 0; t < JB && j0 + t < H; ++t) {
                const int y = y0 + r, j = j0 + t;
                if (j != y) lanes.store(Eb + col_slot(j, y, W) * HW + y * W + x0, acc[r][t]);
              }
          }
        }
      }
  }
}

template <typename T>
void weight(const T* P, const T* Q, T* E, int B, int C, int H, int W) {
  if (W >= Lanes<T, true>::size) weight_lanes<T, true>(P, Q, E, B, C, H, W);
  else weight_lanes<T, false>(P, Q, E, B, C, H, W);
}

// O = map<TRANSPOSED>(A, V); A: [B, H+W-1, H, W], V, O: [B, C, H, W].
template <typename T, bool TRANSPOSED, bool FULL>
void map_lanes(const T* A, const T* V, T* O, int B, int C, int H, int W) {
  typedef Lanes<T, FULL> Ln;
  typedef typename Ln::vec vec;
  const int VL = Ln::size, nxv = vector_count(W, VL);
  const int NS = kRowScalars, NV = kRowVectors, YB = kMapRows, CB = kMapChannels;
  const Ln lanes{FULL ? VL : W};
  const long long HW = (long long)H * W, L = H + W - 1;
  // Column part of A, copied once in the order the tiles read it:
  // col[b][xv][y][j] is the vector (x at xv) of the weights of pixels (j, x)
  // for pixels (y, x), zero where j == y.
  AlignedBuffer<vec> colbuf((size_t)B * nxv * H * H);
  vec* col = colbuf.data;
#pragma omp parallel for collapse(2)
  for (int b = 0; b < B; ++b)
    for (int y = 0; y < H; ++y) {
      const T* Ab = A + b * L * HW;
      for (int j = 0; j < H; ++j) {
        vec* dst = col + ((size_t)b * nxv * H + y) * H + j;  // + xv * H * H
        if (j == y) {
          for (int xv = 0; xv < nxv; ++xv) dst[(size_t)xv * H * H] = vec{};
          continue;
        }
        const T* src = TRANSPOSED ? Ab + col_slot(y, j, W) * HW + j * W : Ab + col_slot(j, y, W) * HW + y * W;
        for (int xv = 0; xv < nxv; ++xv) dst[(size_t)xv * H * H] = lanes.load(src + vector_x(xv, W, VL));
      }
    }
  // Row part of A in [i, y, x] order: A itself, or for the transpose a copy
  // with A[x, y, i] moved to [i, y, x].
  std::vector<T> transposed;
  const T* R = A;
  long long r_batch = L * HW;
  if (TRANSPOSED) {
    transposed.resize((size_t)B * W * HW);
#pragma omp parallel for collapse(2)
    for (int b = 0; b < B; ++b)
      for (int y = 0; y < H; ++y)
        for (int i = 0; i < W; ++i)
          for (int x = 0; x < W; ++x)
            transposed[(size_t)b * W * HW + i * HW + y * W + x] = A[b * L * HW + x * HW + y * W + i];
    R = transposed.data();
    r_batch = W * HW;
  }
  // Tasks: (image, group of channels, group of rows). A group of channels of
  // V (kChannelGroup x H x W) stays in L2 while the group's rows go by. For
  // each tile of rows, the row part goes to a scratch tile [channel][row][x],
  // and the column part adds it on the way to O (the overlapping last vector
  // of x cannot accumulate in O itself).
  const int CG = kChannelGroup, YG = kRowGroup * YB;
  const int ncg = (C + CG - 1) / CG, nyg = (H + YG - 1) / YG;
#pragma omp parallel
  {
    AlignedBuffer<T> scratch((size_t)CG * YB * W);
#pragma omp for collapse(3) schedule(dynamic)
    for (int b = 0; b < B; ++b)
      for (int cg = 0; cg < ncg; ++cg)
        for (int yg = 0; yg < nyg; ++yg) {
          const T* Rb = R + b * r_batch;
          const T* Vb = V + b * C * HW;
          T* Ob = O + b * C * HW;
          const int c_begin = cg * CG, c_end = std::min(C, c_begin + CG);
          const int y_end = std::min(H, (yg + 1) * YG);
          for (int y0 = yg * YG; y0 < y_end; y0 += YB) {
            int ys[YB];
            for (int r = 0; r < YB; ++r) ys[r] = std::min(y0 + r, y_end - 1);  // clamped: computed, not stored
            const int ny = std::min(YB, y_end - y0);
            // Row part: sum_i V[c, y, i] * R[i, y, :], tiles of channels x vectors.
            for (int r = 0; r < ny; ++r)
              for (int c0 = c_begin; c0 < c_end; c0 += NS) {
                const T* s[NS];
                for (int t = 0; t < NS; ++t) s[t] = Vb + std::min(c0 + t, c_end - 1) * HW + ys[r] * W;
                for (int k0 = 0; k0 < nxv; k0 += NV) {
                  int xs[NV];
                  for (int k = 0; k < NV; ++k) xs[k] = vector_x(std::min(k0 + k, nxv - 1), W, VL);
                  vec acc[NS][NV] = {};
                  scalar_vector_tile<NS, NV>(lanes, s, 1, Rb + ys[r] * W, HW, xs, W, acc);
                  for (int t = 0; t < NS && c0 + t < c_end; ++t)
                    for (int k = 0; k < NV && k0 + k < nxv; ++k)
                      lanes.store(scratch.data + ((c0 + t - c_begin) * YB + r) * W + xs[k], acc[t][k]);
                }
              }
            // Column part: + sum_j V[c, j, x] * col[y, j], tiles of rows x channels.
            for (int xv = 0; xv < nxv; ++xv) {
              const int x0 = vector_x(xv, W, VL);
              const T* a[YB];
              for (int r = 0; r < YB; ++r) a[r] = (const T*)(col + (((size_t)b * nxv + xv) * H + ys[r]) * H);
              for (int c0 = c_begin; c0 < c_end; c0 += CB) {
                const T* v[CB];
                int cs[CB];
                for (int t = 0; t < CB; ++t) {
                  cs[t] = std::min(c0 + t, c_end - 1) - c_begin;  // clamped: computed, not stored
                  v[t] = Vb + (c_begin + cs[t]) * HW + x0;
                }
                vec acc[YB][CB];
                for (int r = 0; r < YB; ++r)
                  for (int t = 0; t < CB; ++t)
                    acc[r][t] = lanes.load(scratch.data + (cs[t] * YB + std::min(r, ny - 1)) * W + x0);
                vector_vector_tile<YB, CB>(lanes, a, VL, v, W, H, acc);
                for (int t = 0; t < CB && c0 + t < c_end; ++t)
                  for (int r = 0; r < ny; ++r) lanes.store(Ob + (c0 + t) * HW + ys[r] * W + x0, acc[r][t]);
              }
            }
          }
        }
  }
}

template <typename T, bool TRANSPOSED>
void map(const T* A, const T* V, T* O, int B, int C, int H, int W) {
  if (W >= Lanes<T, true>::size) map_lanes<T, TRANSPOSED, true>(A, V, O, B, C, H, W);
  else map_lanes<T, TRANSPOSED, false>(A, V, O, B, C, H, W);
}

// A = softmax of E over its L positions (axis 1 of [B, L, H, W]), and the
// backward pass D = A * (G - sum_l G * A). Tasks: (image, block of pixels);
// a block's L x kSoftmaxPixels values stay in L2 across the passes, and the
// inner loops run along the contiguous pixels (vectorised, exp included).
constexpr int kSoftmaxPixels = 256;

template <typename T>
void softmax(const T* E, T* A, int B, int L, long long HW) {
  const int PB = kSoftmaxPixels;
  const long long nblk = (HW + PB - 1) / PB;
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b)
    for (long long blk = 0; blk < nblk; ++blk) {
      const long long p0 = blk * PB;
      const int n = (int)std::min<long long>(PB, HW - p0);
      const T* e = E + (long long)b * L * HW + p0;
      T* a = A + (long long)b * L * HW + p0;
      T top[PB], sum[PB];
      for (int p = 0; p < n; ++p) top[p] = e[p], sum[p] = 0;
      for (int l = 1; l < L; ++l)
        for (int p = 0; p < n; ++p) top[p] = std::max(top[p], e[l * HW + p]);
      for (int l = 0; l < L; ++l)
        for (int p = 0; p < n; ++p) {
          const T v = std::exp(e[l * HW + p] - top[p]);
          a[l * HW + p] = v;
          sum[p] += v;
        }
      for (int p = 0; p < n; ++p) sum[p] = 1 / sum[p];
      for (int l = 0; l < L; ++l)
        for (int p = 0; p < n; ++p) a[l * HW + p] *= sum[p];
    }
}

template <typename T>
void softmax_grad(const T* A, const T* G, T* D, int B, int L, long long HW) {
  const int PB = kSoftmaxPixels;
  const long long nblk = (HW + PB - 1) / PB;
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; ++b)
    for (long long blk = 0; blk < nblk; ++blk) {
      const long long p0 = blk * PB, offset = (long long)b * L * HW + p0;
      const int n = (int)std::min<long long>(PB, HW - p0);
      const T* a = A + offset;
      const T* g = G + offset;
      T* d = D + offset;
      T dot[PB] = {};
      for (int l = 0; l < L; ++l)
        for (int p = 0; p < n; ++p) dot[p] += g[l * HW + p] * a[l * HW + p];
      for (int l = 0; l < L; ++l)
        for (int p = 0; p < n; ++p) d[l * HW + p] = a[l * HW + p] * (g[l * HW + p] - dot[p]);
    }
}

}  // namespace cca_cpu
