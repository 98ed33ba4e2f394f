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

namespace cca_cpu {

constexpr int kChannelGroup = 18;  // map: channels of V kept in L2 by one task (a multiple of the row-part scalars, 6 or 3)
constexpr int kRowGroup = 6;       // map: row tiles per task
constexpr int kWeightChannels = 64;  // weight: channels per block of the column part (32, 128: 2-5% slower)

// Register tiles, sized to the vector register file (32 registers with
// AVX-512, 16 with AVX2): map column part rows x channels, weight column part
// rows x positions, row parts scalars x vectors. The AVX-512 numbers were
// measured with benchmarks/bench_cca_tiles.py. Intel Xeon family 6 model 167:
// no other tiling faster by more than the machine's drift (map 4x6 0.96x in
// the sweep, 0.99x head to head over 5 rounds). AMD EPYC family 25 (Zen 4,
// which runs a 512-bit operation as two 256-bit halves): row parts 3 x 7 were
// 0.97x in the sweep and 0.95x head to head (7 of 8 rounds faster), level on
// the Xeon (1.01x), so Zen 4 gets them; GCC 12 names Zen 4 znver3 (with
// AVX-512, which Zen 3 lacks), GCC 13 and later znver4. The AVX2 tiles are
// sized to 16 registers, not measured.
// CCA_TILES (6 numbers, defined before this header) overrides them.
#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#ifndef CCA_TILES
#if defined(__znver3__) || defined(__znver4__)
#define CCA_TILES 4, 4, 4, 6, 3, 7
#else
#define CCA_TILES 4, 4, 4, 6, 6, 4
#endif
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

// Scratch memory aligned for vectors (a std::vector of vectors is not, before C++17).
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

// Row part of weight for image b, row y: E[i, y, :] = sum_c Q[c, y, i] * P[c, y, :].
// The rows y of P and Q (one per channel, HW apart) are first copied next to
// each other into rows_p, rows_q [C, W], so that the tiles read them
// sequentially. (The row and column parts are separate functions, not
// inlined: in one function GCC spills the accumulators of the tiles.)
template <typename T, bool FULL>
__attribute__((noinline)) void weight_row(const T* Pb, const T* Qb, T* Eb, int C, int H, int W, int y, T* rows_p,
                                          T* rows_q) {
  typedef Lanes<T, FULL> Ln;
  typedef typename Ln::vec vec;
  const int VL = Ln::size, nxv = vector_count(W, VL), NS = kRowScalars, NV = kRowVectors;
  const Ln lanes{FULL ? VL : W};
  const long long HW = (long long)H * W;
  for (int c = 0; c < C; ++c) {
    std::memcpy(rows_p + (size_t)c * W, Pb + c * HW + y * W, W * sizeof(T));
    std::memcpy(rows_q + (size_t)c * W, Qb + c * HW + y * W, W * sizeof(T));
  }
  for (int i0 = 0; i0 < W; i0 += NS) {
    const T* s[NS];
    for (int t = 0; t < NS; ++t) s[t] = rows_q + std::min(i0 + t, W - 1);  // clamped: computed, not stored
    for (int k0 = 0; k0 < nxv; k0 += NV) {
      int xs[NV];
      for (int k = 0; k < NV; ++k) xs[k] = vector_x(std::min(k0 + k, nxv - 1), W, VL);
      vec acc[NS][NV] = {};
      scalar_vector_tile<NS, NV>(lanes, s, W, rows_p, W, xs, C, acc);
      for (int t = 0; t < NS && i0 + t < W; ++t)
        for (int k = 0; k < NV && k0 + k < nxv; ++k) lanes.store(Eb + (i0 + t) * HW + y * W + xs[k], acc[t][k]);
    }
  }
}

// One block of channels of the column part of weight (below): the products
// of the packed rows of P and Q [H, KC] over their first kc channels, added to
// sums [H, H] (ADD) or, when the block holds all channels, stored in E. (Two
// functions, not one with a branch: GCC then spills the accumulators.)
template <typename T, bool FULL, bool ADD>
__attribute__((noinline)) void weight_column_block(const typename Lanes<T, FULL>::vec* packed_p,
                                                   const typename Lanes<T, FULL>::vec* packed_q, int KC, int kc,
                                                   int H, int W, int x0, typename Lanes<T, FULL>::vec* sums, T* Eb) {
  typedef Lanes<T, FULL> Ln;
  typedef typename Ln::vec vec;
  const int VL = Ln::size, YB = kWeightRows, JB = kWeightPositions;
  const Ln lanes{FULL ? VL : W};
  const long long HW = (long long)H * W;
  for (int j0 = 0; j0 < H; j0 += JB) {
    const T* q[JB];
    for (int t = 0; t < JB; ++t) q[t] = (const T*)&packed_q[(size_t)std::min(j0 + t, H - 1) * KC];  // clamped: computed, not stored
    for (int y0 = 0; y0 < H; y0 += YB) {
      const T* p[YB];
      for (int r = 0; r < YB; ++r) p[r] = (const T*)&packed_p[(size_t)std::min(y0 + r, H - 1) * KC];  // clamped rows: computed, not stored
      vec acc[YB][JB] = {};
      vector_vector_tile<YB, JB>(lanes, p, VL, q, VL, kc, acc);
      for (int r = 0; r < YB && y0 + r < H; ++r)
        for (int t = 0; t < JB && j0 + t < H; ++t) {
          const int y = y0 + r, j = j0 + t;
          if (ADD) sums[(size_t)y * H + j] += acc[r][t];
          else if (j != y) lanes.store(Eb + col_slot(j, y, W) * HW + y * W + x0, acc[r][t]);
        }
    }
  }
}

// Column part of weight for image b, the vector of x at x0:
// E[s(j,y), y, x] = sum_c P[c, y, x] * Q[c, j, x], for each lane a product of
// [H, C] by [C, H]. The reduction runs over channels, HW apart in P and Q: too
// far for the hardware prefetcher. So it goes in blocks of kWeightChannels
// channels: the block's vectors of P and Q are copied in [row][channel] order
// to packed_p, packed_q [H, KC] (they stay in L2 while the tiles read them
// sequentially); with more than one block the sums wait in sums [H, H] until
// the last block is added.
template <typename T, bool FULL>
void weight_column(const T* Pb, const T* Qb, T* Eb, int C, int H, int W, int x0,
                   typename Lanes<T, FULL>::vec* packed_p, typename Lanes<T, FULL>::vec* packed_q,
                   typename Lanes<T, FULL>::vec* sums) {
  typedef Lanes<T, FULL> Ln;
  typedef typename Ln::vec vec;
  const Ln lanes{FULL ? Ln::size : W};
  const int KC = std::min(C, kWeightChannels);
  const long long HW = (long long)H * W;
  if (C > KC) std::memset((void*)sums, 0, (size_t)H * H * sizeof(vec));
  for (int c0 = 0; c0 < C; c0 += KC) {
    const int kc = std::min(KC, C - c0);
    for (int c = 0; c < kc; ++c)
      for (int y = 0; y < H; ++y) packed_p[(size_t)y * KC + c] = lanes.load(Pb + (c0 + c) * HW + y * W + x0);
    for (int c = 0; c < kc; ++c)
      for (int y = 0; y < H; ++y) packed_q[(size_t)y * KC + c] = lanes.load(Qb + (c0 + c) * HW + y * W + x0);
    if (C > KC) weight_column_block<T, FULL, true>(packed_p, packed_q, KC, kc, H, W, x0, sums, Eb);
    else weight_column_block<T, FULL, false>(packed_p, packed_q, KC, kc, H, W, x0, sums, Eb);
  }
  if (C > KC)  // j outer: for one j, E is written along rows y of two slots
    for (int j = 0; j < H; ++j)
      for (int y = 0; y < H; ++y)
        if (j != y) lanes.store(Eb + col_slot(j, y, W) * HW + y * W + x0, sums[(size_t)y * H + j]);
}

// E = weight(P, Q); P, Q: [B, C, H, W], E: [B, H+W-1, H, W]. Tasks: (image,
// row) for the row part, then (image, vector of x) for the column part, with
// the thread's scratch buffers reused across its tasks.
template <typename T, bool FULL>
void weight_lanes(const T* P, const T* Q, T* E, int B, int C, int H, int W) {
  typedef typename Lanes<T, FULL>::vec vec;
  const int VL = Lanes<T, FULL>::size, nxv = vector_count(W, VL), KC = std::min(C, kWeightChannels);
  const long long HW = (long long)H * W, L = H + W - 1;
#pragma omp parallel
  {
    AlignedBuffer<T> rows_p((size_t)C * W), rows_q((size_t)C * W);
#pragma omp for collapse(2) schedule(dynamic) nowait
    for (int b = 0; b < B; ++b)
      for (int y = 0; y < H; ++y)
        weight_row<T, FULL>(P + b * C * HW, Q + b * C * HW, E + b * L * HW, C, H, W, y, rows_p.data, rows_q.data);
    AlignedBuffer<vec> packed_p((size_t)H * KC), packed_q((size_t)H * KC), sums(C > KC ? (size_t)H * H : 1);
#pragma omp for collapse(2) schedule(dynamic)
    for (int b = 0; b < B; ++b)
      for (int xv = 0; xv < nxv; ++xv)
        weight_column<T, FULL>(P + b * C * HW, Q + b * C * HW, E + b * L * HW, C, H, W, vector_x(xv, W, VL),
                               packed_p.data, packed_q.data, sums.data);
  }
}

template <typename T>
void weight(const T* P, const T* Q, T* E, int B, int C, int H, int W) {
  if (W >= Lanes<T, true>::size) weight_lanes<T, true>(P, Q, E, B, C, H, W);
  else weight_lanes<T, false>(P, Q, E, B, C, H, W);
}

// Row part of map for one task: nc channels of V (Vg, HW apart) and the ny
// rows from y_begin: scratch[c][r][:] = sum_i V[c, y, i] * R[y, i, :] with
// y = y_begin + r, R the row part of A in [y][i][x] order; tiles of channels
// x vectors.
template <typename T, bool FULL>
__attribute__((noinline)) void map_rows(const T* R, const T* Vg, int nc, int ny, int y_begin, int H, int W,
                                        T* scratch) {
  typedef Lanes<T, FULL> Ln;
  typedef typename Ln::vec vec;
  const int VL = Ln::size, nxv = vector_count(W, VL), NS = kRowScalars, NV = kRowVectors;
  const Ln lanes{FULL ? VL : W};
  const long long HW = (long long)H * W;
  for (int r = 0; r < ny; ++r) {
    const int y = y_begin + r;
    for (int c0 = 0; c0 < nc; c0 += NS) {
      const T* s[NS];
      for (int t = 0; t < NS; ++t) s[t] = Vg + std::min(c0 + t, nc - 1) * HW + y * W;  // clamped: computed, not stored
      for (int k0 = 0; k0 < nxv; k0 += NV) {
        int xs[NV];
        for (int k = 0; k < NV; ++k) xs[k] = vector_x(std::min(k0 + k, nxv - 1), W, VL);
        vec acc[NS][NV] = {};
        scalar_vector_tile<NS, NV>(lanes, s, 1, R + (size_t)y * W * W, W, xs, W, acc);
        for (int t = 0; t < NS && c0 + t < nc; ++t)
          for (int k = 0; k < NV && k0 + k < nxv; ++k) lanes.store(scratch + ((c0 + t) * ny + r) * W + xs[k], acc[t][k]);
      }
    }
  }
}

// Column part of map for one task, added to the row part (scratch) on the
// way to O: O[c, y, x] = scratch[c][r][x] + sum_j V[c, j, x] * col[y, j] at x,
// tiles of rows x channels. For each vector of x, the task's channels of V
// are first copied to packed_v [nc, H]: aligned, so that the tiles read one
// cache line per vector instead of two, and read by all the task's rows.
template <typename T, bool FULL>
__attribute__((noinline)) void map_columns(const typename Lanes<T, FULL>::vec* col, const T* Vg, T* Og, int nc,
                                           int ny, int y_begin, int H, int W, const T* scratch,
                                           typename Lanes<T, FULL>::vec* packed_v) {
  typedef Lanes<T, FULL> Ln;
  typedef typename Ln::vec vec;
  const int VL = Ln::size, nxv = vector_count(W, VL), YB = kMapRows, CB = kMapChannels;
  const Ln lanes{FULL ? VL : W};
  const long long HW = (long long)H * W;
  for (int xv = 0; xv < nxv; ++xv) {
    const int x0 = vector_x(xv, W, VL);
    for (int c = 0; c < nc; ++c)
      for (int j = 0; j < H; ++j) packed_v[(size_t)c * H + j] = lanes.load(Vg + c * HW + j * W + x0);
    for (int r0 = 0; r0 < ny; r0 += YB) {
      const T* a[YB];
      int rs[YB];
      for (int r = 0; r < YB; ++r) {
        rs[r] = std::min(r0 + r, ny - 1);  // clamped: computed, not stored
        a[r] = (const T*)(col + ((size_t)xv * H + y_begin + rs[r]) * H);
      }
      for (int c0 = 0; c0 < nc; c0 += CB) {
        const T* v[CB];
        int cs[CB];
        for (int t = 0; t < CB; ++t) {
          cs[t] = std::min(c0 + t, nc - 1);  // clamped: computed, not stored
          v[t] = (const T*)(packed_v + (size_t)cs[t] * H);
        }
        vec acc[YB][CB];
        for (int r = 0; r < YB; ++r)
          for (int t = 0; t < CB; ++t) acc[r][t] = lanes.load(scratch + (cs[t] * ny + rs[r]) * W + x0);
        vector_vector_tile<YB, CB>(lanes, a, VL, v, VL, H, acc);
        for (int t = 0; t < CB && c0 + t < nc; ++t)
          for (int r = 0; r < YB && r0 + r < ny; ++r) lanes.store(Og + (c0 + t) * HW + (y_begin + r0 + r) * W + x0, acc[r][t]);
      }
    }
  }
}

// O = map<TRANSPOSED>(A, V); A: [B, H+W-1, H, W], V, O: [B, C, H, W].
template <typename T, bool TRANSPOSED, bool FULL>
void map_lanes(const T* A, const T* V, T* O, int B, int C, int H, int W) {
  typedef Lanes<T, FULL> Ln;
  typedef typename Ln::vec vec;
  const int VL = Ln::size, nxv = vector_count(W, VL);
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
  // Row part of A, copied in [y][i][x] order (the W x W weights of row y
  // next to each other, read sequentially by the tiles): rows[b][y][i][x] is
  // A[b, i, y, x], or for the transpose A[b, x, y, i].
  AlignedBuffer<T> rowbuf((size_t)B * H * W * W);
  T* rows = rowbuf.data;
#pragma omp parallel for collapse(2)
  for (int b = 0; b < B; ++b)
    for (int y = 0; y < H; ++y) {
      const T* Ab = A + b * L * HW + y * W;
      T* dst = rows + ((size_t)b * H + y) * W * W;
      for (int i = 0; i < W; ++i)
        if (TRANSPOSED)
          for (int x = 0; x < W; ++x) dst[x * W + i] = Ab[i * HW + x];
        else
          std::memcpy(dst + (size_t)i * W, Ab + i * HW, W * sizeof(T));
    }
  // Tasks: (image, group of channels, group of rows), with the thread's
  // scratch buffers reused across its tasks (see map_rows, map_columns).
  const int CG = kChannelGroup, YG = kRowGroup * kMapRows;
  const int ncg = (C + CG - 1) / CG, nyg = (H + YG - 1) / YG;
#pragma omp parallel
  {
    AlignedBuffer<T> scratch((size_t)CG * YG * W);
    AlignedBuffer<vec> packed_v((size_t)CG * H);
#pragma omp for collapse(3) schedule(dynamic)
    for (int b = 0; b < B; ++b)
      for (int cg = 0; cg < ncg; ++cg)
        for (int yg = 0; yg < nyg; ++yg) {
          const int c_begin = cg * CG, nc = std::min(C, c_begin + CG) - c_begin;
          const int y_begin = yg * YG, ny = std::min(H, y_begin + YG) - y_begin;
          const T* Vg = V + (b * C + c_begin) * HW;
          map_rows<T, FULL>(rows + (size_t)b * H * W * W, Vg, nc, ny, y_begin, H, W, scratch.data);
          map_columns<T, FULL>(col + (size_t)b * nxv * H * H, Vg, O + (b * C + c_begin) * HW, nc, ny, y_begin, H,
                               W, scratch.data, packed_v.data);
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
