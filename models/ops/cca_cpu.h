// Criss-cross attention: CPU kernels (C++14, OpenMP, GCC vector extensions),
// for images (2-D) and clips (3-D, the video CCNet).
//
// Layout as in the official CCNet op. For one image, with q, k, v of shape
// [C, H, W] and L = H + W - 1 attention positions per pixel (y, x):
//   slot i < W        : the pixel (y, i) of the same row, the pixel itself included
//   slot s(j, y) >= W : the pixel (j, x) of the same column, j != y, where
//                       s(j, y) = W + j - (j > y)
// A clip [C, T, H, W] has L = T + H + W - 2 positions per pixel (t, y, x):
// the slots above within frame t, then its temporal line
//   slot r(u, t)      : the pixel (u, y, x) of frame u != t, where
//                       r(u, t) = W + H - 1 + u - (u > t)
// so that a clip of one frame is an image. Tensors are [B, C, T, H, W] and
// energies/attention [B, L, T, H, W]; the 2-D functions are the 3-D ones at T = 1.
//
// Forward and backward reduce to two primitives:
//   weight(P, Q) -> E [L, T, H, W]
//       E[i, t, y, x]       = sum_c P[c, t, y, x] * Q[c, t, y, i]
//       E[s(j,y), t, y, x]  = sum_c P[c, t, y, x] * Q[c, t, j, x]
//       E[r(u,t), t, y, x]  = sum_c P[c, t, y, x] * Q[c, u, y, x]
//   map<false>(A, V) -> O [C, T, H, W]  (the aggregation "ca_map")
//       O[c, t, y, x] = sum_i V[c, t, y, i] * A[i, t, y, x] + sum_{j!=y} V[c, t, j, x] * A[s(j,y), t, y, x]
//                       + sum_{u!=t} V[c, u, y, x] * A[r(u,t), t, y, x]
//   map<true>(A, V) -> O [C, T, H, W]   (its transpose, used by the backward passes)
//       O[c, t, y, x] = sum_i V[c, t, y, i] * A[x, t, y, i] + sum_{j!=y} V[c, t, j, x] * A[s(y,j), t, j, x]
//                       + sum_{u!=t} V[c, u, y, x] * A[r(t,u), u, y, x]
// so that
//   ca_weight:  E = weight(q, k);   dq = map<false>(dE, k);  dk = map<true>(dE, q)
//   ca_map:     O = map<false>(A, v); dA = weight(dO, v);    dv = map<true>(A, dO)
//
// Every output element is written by one task (no atomics, deterministic).
// Each primitive has a row part and a line part for the columns (and, for
// clips, one for the temporal lines), computed with register tiles of SIMD
// vectors along the contiguous x axis:
//   row parts     [scalars x vectors]: broadcast scalars times vectors of x
//                 (map: channels; weight: positions i);
//   line parts    [vectors x vectors]: for one vector of x, line points times
//                 channels (map) or times positions (weight), read from
//                 copies laid out so that the tiles read them sequentially.
// A column is a line of H points W apart, a temporal line one of T points
// H * W apart; the weight's line part serves both.
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

// Slot of point j of a line in the attention of point y of the same line,
// j != y, the line's slots starting at `first` (the column: W, the temporal
// line: W + H - 1).
static inline long long line_slot(int j, int y, long long first) { return first + j - (j > y); }

// Where the frames of a batch lie. Frame n = b * T + t (frame t of clip b):
// its channel (or slot) c at c * S from its base, S = T * H * W; its base in
// a tensor of K channels per clip at b * K * S + t * H * W.
struct Frames {
  int B, T, H, W;
  long long HW, S, L;  // L = T + H + W - 2 slots per position
  Frames(int B_, int T_, int H_, int W_)
      : B(B_), T(T_), H(H_), W(W_), HW((long long)H_ * W_), S((long long)T_ * H_ * W_), L(T_ + H_ + W_ - 2) {}
  int count() const { return B * T; }
  long long base(int n, long long K) const { return (n / T) * K * S + (n % T) * HW; }
};

// Row part of weight for one frame (bases Pb, Qb, Eb; planes S apart), row y:
// E[i, y, :] = sum_c Q[c, y, i] * P[c, y, :].
// The rows y of P and Q (one per channel, S apart) are first copied next to
// each other into rows_p, rows_q [C, W], so that the tiles read them
// sequentially. (The row and line parts are separate functions, not
// inlined: in one function GCC spills the accumulators of the tiles.)
template <typename T, bool FULL>
__attribute__((noinline)) void weight_row(const T* Pb, const T* Qb, T* Eb, int C, long long S, int W, int y,
                                          T* rows_p, T* rows_q) {
  typedef Lanes<T, FULL> Ln;
  typedef typename Ln::vec vec;
  const int VL = Ln::size, nxv = vector_count(W, VL), NS = kRowScalars, NV = kRowVectors;
  const Ln lanes{FULL ? VL : W};
  for (int c = 0; c < C; ++c) {
    std::memcpy(rows_p + (size_t)c * W, Pb + c * S + y * W, W * sizeof(T));
    std::memcpy(rows_q + (size_t)c * W, Qb + c * S + y * W, W * sizeof(T));
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
        for (int k = 0; k < NV && k0 + k < nxv; ++k) lanes.store(Eb + (i0 + t) * S + y * W + xs[k], acc[t][k]);
    }
  }
}

// A line for the line parts: N points `step` apart from a base (a column:
// H points W apart; a temporal line: T points H * W apart), whose slots
// start at `first`; planes (channels, slots) are S apart.
struct Line {
  int N;
  long long step, S, first;
};

// One block of channels of the line part of weight (below): the products
// of the packed points of P and Q [N, KC] over their first kc channels, added to
// sums [N, N] (ADD) or, when the block holds all channels, stored in E. (Two
// functions, not one with a branch: GCC then spills the accumulators.)
template <typename T, bool FULL, bool ADD>
__attribute__((noinline)) void weight_line_block(const typename Lanes<T, FULL>::vec* packed_p,
                                                 const typename Lanes<T, FULL>::vec* packed_q, int KC, int kc,
                                                 Line line, int W, typename Lanes<T, FULL>::vec* sums, T* Eb) {
  typedef Lanes<T, FULL> Ln;
  typedef typename Ln::vec vec;
  const int VL = Ln::size, YB = kWeightRows, JB = kWeightPositions, N = line.N;
  const Ln lanes{FULL ? VL : W};
  for (int j0 = 0; j0 < N; j0 += JB) {
    const T* q[JB];
    for (int t = 0; t < JB; ++t) q[t] = (const T*)&packed_q[(size_t)std::min(j0 + t, N - 1) * KC];  // clamped: computed, not stored
    for (int y0 = 0; y0 < N; y0 += YB) {
      const T* p[YB];
      for (int r = 0; r < YB; ++r) p[r] = (const T*)&packed_p[(size_t)std::min(y0 + r, N - 1) * KC];  // clamped rows: computed, not stored
      vec acc[YB][JB] = {};
      vector_vector_tile<YB, JB>(lanes, p, VL, q, VL, kc, acc);
      for (int r = 0; r < YB && y0 + r < N; ++r)
        for (int t = 0; t < JB && j0 + t < N; ++t) {
          const int y = y0 + r, j = j0 + t;
          if (ADD) sums[(size_t)y * N + j] += acc[r][t];
          else if (j != y) lanes.store(Eb + line_slot(j, y, line.first) * line.S + y * line.step, acc[r][t]);
        }
    }
  }
}

// Line part of weight for one line and one vector of x (bases Pb, Qb, Eb at
// the line's first point and the vector's first x):
// E[slot(j,y), point y] = sum_c P[c, point y] * Q[c, point j], for each lane a
// product of [N, C] by [C, N]. The reduction runs over channels, S apart in P
// and Q: too far for the hardware prefetcher. So it goes in blocks of
// kWeightChannels channels: the block's vectors of P and Q are copied in
// [point][channel] order to packed_p, packed_q [N, KC] (they stay in L2 while
// the tiles read them sequentially); with more than one block the sums wait
// in sums [N, N] until the last block is added.
template <typename T, bool FULL>
void weight_line(const T* Pb, const T* Qb, T* Eb, int C, Line line, int W,
                 typename Lanes<T, FULL>::vec* packed_p, typename Lanes<T, FULL>::vec* packed_q,
                 typename Lanes<T, FULL>::vec* sums) {
  typedef Lanes<T, FULL> Ln;
  typedef typename Ln::vec vec;
  const Ln lanes{FULL ? Ln::size : W};
  const int KC = std::min(C, kWeightChannels), N = line.N;
  if (C > KC) std::memset((void*)sums, 0, (size_t)N * N * sizeof(vec));
  for (int c0 = 0; c0 < C; c0 += KC) {
    const int kc = std::min(KC, C - c0);
    for (int c = 0; c < kc; ++c)
      for (int y = 0; y < N; ++y) packed_p[(size_t)y * KC + c] = lanes.load(Pb + (c0 + c) * line.S + y * line.step);
    for (int c = 0; c < kc; ++c)
      for (int y = 0; y < N; ++y) packed_q[(size_t)y * KC + c] = lanes.load(Qb + (c0 + c) * line.S + y * line.step);
    if (C > KC) weight_line_block<T, FULL, true>(packed_p, packed_q, KC, kc, line, W, sums, Eb);
    else weight_line_block<T, FULL, false>(packed_p, packed_q, KC, kc, line, W, sums, Eb);
  }
  if (C > KC)  // j outer: for one j, E is written along points y of two slots
    for (int j = 0; j < N; ++j)
      for (int y = 0; y < N; ++y)
        if (j != y) lanes.store(Eb + line_slot(j, y, line.first) * line.S + y * line.step, sums[(size_t)y * N + j]);
}

// E = weight(P, Q); P, Q: [B, C, T, H, W], E: [B, L, T, H, W]. Tasks: (frame,
// row) for the row part, (frame, vector of x) for the columns, then for clips
// (clip, row, vector of x) for the temporal lines, with the thread's scratch
// buffers reused across its tasks.
template <typename T, bool FULL>
void weight_lanes(const T* P, const T* Q, T* E, int C, const Frames f) {
  typedef typename Lanes<T, FULL>::vec vec;
  const int VL = Lanes<T, FULL>::size, nxv = vector_count(f.W, VL), KC = std::min(C, kWeightChannels);
  const int N = std::max(f.H, f.T), frames = f.count(), B = f.B, H = f.H, W = f.W;
  const Line column{H, W, f.S, W}, time{f.T, f.HW, f.S, W + H - 1};
#pragma omp parallel
  {
    AlignedBuffer<T> rows_p((size_t)C * W), rows_q((size_t)C * W);
#pragma omp for collapse(2) schedule(dynamic) nowait
    for (int n = 0; n < frames; ++n)
      for (int y = 0; y < H; ++y)
        weight_row<T, FULL>(P + f.base(n, C), Q + f.base(n, C), E + f.base(n, f.L), C, f.S, W, y, rows_p.data,
                            rows_q.data);
    AlignedBuffer<vec> packed_p((size_t)N * KC), packed_q((size_t)N * KC), sums(C > KC ? (size_t)N * N : 1);
#pragma omp for collapse(2) schedule(dynamic) nowait
    for (int n = 0; n < frames; ++n)
      for (int xv = 0; xv < nxv; ++xv) {
        const long long x0 = vector_x(xv, W, VL);
        weight_line<T, FULL>(P + f.base(n, C) + x0, Q + f.base(n, C) + x0, E + f.base(n, f.L) + x0, C, column, W,
                             packed_p.data, packed_q.data, sums.data);
      }
    if (f.T > 1) {
#pragma omp for collapse(3) schedule(dynamic)
      for (int b = 0; b < B; ++b)
        for (int y = 0; y < H; ++y)
          for (int xv = 0; xv < nxv; ++xv) {
            const long long at = (long long)y * W + vector_x(xv, W, VL);
            weight_line<T, FULL>(P + f.base(b * f.T, C) + at, Q + f.base(b * f.T, C) + at,
                                 E + f.base(b * f.T, f.L) + at, C, time, W, packed_p.data, packed_q.data, sums.data);
          }
    }
  }
}

template <typename T>
void weight3d(const T* P, const T* Q, T* E, int B, int C, int T_, int H, int W) {
  const Frames f(B, T_, H, W);
  if (W >= Lanes<T, true>::size) weight_lanes<T, true>(P, Q, E, C, f);
  else weight_lanes<T, false>(P, Q, E, C, f);
}

template <typename T>
void weight(const T* P, const T* Q, T* E, int B, int C, int H, int W) {
  weight3d(P, Q, E, B, C, 1, H, W);
}

// Row part of map for one task: nc channels of V (Vg, S apart) and the ny
// rows from y_begin: scratch[c][r][:] = sum_i V[c, y, i] * R[y, i, :] with
// y = y_begin + r, R the row part of A in [y][i][x] order; tiles of channels
// x vectors.
template <typename T, bool FULL>
__attribute__((noinline)) void map_rows(const T* R, const T* Vg, int nc, int ny, int y_begin, long long S, int W,
                                        T* scratch) {
  typedef Lanes<T, FULL> Ln;
  typedef typename Ln::vec vec;
  const int VL = Ln::size, nxv = vector_count(W, VL), NS = kRowScalars, NV = kRowVectors;
  const Ln lanes{FULL ? VL : W};
  for (int r = 0; r < ny; ++r) {
    const int y = y_begin + r;
    for (int c0 = 0; c0 < nc; c0 += NS) {
      const T* s[NS];
      for (int t = 0; t < NS; ++t) s[t] = Vg + std::min(c0 + t, nc - 1) * S + y * W;  // clamped: computed, not stored
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
                                           int ny, int y_begin, int H, long long S, int W, const T* scratch,
                                           typename Lanes<T, FULL>::vec* packed_v) {
  typedef Lanes<T, FULL> Ln;
  typedef typename Ln::vec vec;
  const int VL = Ln::size, nxv = vector_count(W, VL), YB = kMapRows, CB = kMapChannels;
  const Ln lanes{FULL ? VL : W};
  for (int xv = 0; xv < nxv; ++xv) {
    const int x0 = vector_x(xv, W, VL);
    for (int c = 0; c < nc; ++c)
      for (int j = 0; j < H; ++j) packed_v[(size_t)c * H + j] = lanes.load(Vg + c * S + j * W + x0);
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
          for (int r = 0; r < YB && r0 + r < ny; ++r) lanes.store(Og + (c0 + t) * S + (y_begin + r0 + r) * W + x0, acc[r][t]);
      }
    }
  }
}

// Temporal part of map for one clip and one row y (bases Ab, Vb, Ob at the
// clip's frame 0, row y), added to O: O[c, t, y, x] += sum_u V[c, u, y, x] * a[t][u]
// at x, tiles of frames x channels. For each vector of x, the weights a [T, T]
// (zero where u == t) and the channels of V [C, T] are first copied in the
// order the tiles read them. The last vector of a row may overlap the one
// before it (vector_x); `fresh` keeps the sum of the lanes already added to
// out of the overlap.
template <typename T, bool TRANSPOSED, bool FULL>
__attribute__((noinline)) void map_time(const T* Ab, const T* Vb, T* Ob, int C, const Frames& f,
                                        typename Lanes<T, FULL>::vec* weights, typename Lanes<T, FULL>::vec* packed_v) {
  typedef Lanes<T, FULL> Ln;
  typedef typename Ln::vec vec;
  const int VL = Ln::size, W = f.W, nxv = vector_count(W, VL), NT = f.T, YB = kMapRows, CB = kMapChannels;
  const Ln lanes{FULL ? VL : W};
  const long long first = W + f.H - 1;
  for (int xv = 0; xv < nxv; ++xv) {
    const int x0 = vector_x(xv, W, VL), done = xv > 0 ? std::min(xv * VL, W) - x0 : 0;
    vec fresh;
    for (int l = 0; l < VL; ++l) fresh[l] = l >= done;
    for (int t = 0; t < NT; ++t)
      for (int u = 0; u < NT; ++u)
        weights[t * NT + u] = u == t ? vec{}
                              : TRANSPOSED ? lanes.load(Ab + line_slot(t, u, first) * f.S + u * f.HW + x0)
                                           : lanes.load(Ab + line_slot(u, t, first) * f.S + t * f.HW + x0);
    for (int c = 0; c < C; ++c)
      for (int u = 0; u < NT; ++u) packed_v[(size_t)c * NT + u] = lanes.load(Vb + c * f.S + u * f.HW + x0);
    for (int t0 = 0; t0 < NT; t0 += YB) {
      const T* a[YB];
      for (int r = 0; r < YB; ++r) a[r] = (const T*)(weights + std::min(t0 + r, NT - 1) * NT);  // clamped: computed, not stored
      for (int c0 = 0; c0 < C; c0 += CB) {
        const T* v[CB];
        for (int k = 0; k < CB; ++k) v[k] = (const T*)(packed_v + (size_t)std::min(c0 + k, C - 1) * NT);  // clamped
        vec acc[YB][CB] = {};
        vector_vector_tile<YB, CB>(lanes, a, VL, v, VL, NT, acc);
        for (int k = 0; k < CB && c0 + k < C; ++k)
          for (int r = 0; r < YB && t0 + r < NT; ++r) {
            T* o = Ob + (c0 + k) * f.S + (t0 + r) * f.HW + x0;
            lanes.store(o, lanes.load(o) + acc[r][k] * fresh);
          }
      }
    }
  }
}

// O = map<TRANSPOSED>(A, V); A: [B, L, T, H, W], V, O: [B, C, T, H, W].
template <typename T, bool TRANSPOSED, bool FULL>
void map_lanes(const T* A, const T* V, T* O, int C, const Frames f) {
  typedef Lanes<T, FULL> Ln;
  typedef typename Ln::vec vec;
  const int VL = Ln::size, H = f.H, W = f.W, nxv = vector_count(W, VL), frames = f.count();
  const Ln lanes{FULL ? VL : W};
  const long long S = f.S;
  // Column part of A, copied once in the order the tiles read it:
  // col[n][xv][y][j] is the vector (x at xv) of the weights of pixels (j, x)
  // for pixels (y, x) of frame n, zero where j == y.
  AlignedBuffer<vec> colbuf((size_t)frames * nxv * H * H);
  vec* col = colbuf.data;
#pragma omp parallel for collapse(2)
  for (int n = 0; n < frames; ++n)
    for (int y = 0; y < H; ++y) {
      const T* An = A + f.base(n, f.L);
      for (int j = 0; j < H; ++j) {
        vec* dst = col + ((size_t)n * nxv * H + y) * H + j;  // + xv * H * H
        if (j == y) {
          for (int xv = 0; xv < nxv; ++xv) dst[(size_t)xv * H * H] = vec{};
          continue;
        }
        const T* src = TRANSPOSED ? An + line_slot(y, j, W) * S + j * W : An + line_slot(j, y, W) * S + y * W;
        for (int xv = 0; xv < nxv; ++xv) dst[(size_t)xv * H * H] = lanes.load(src + vector_x(xv, W, VL));
      }
    }
  // Row part of A, copied in [y][i][x] order (the W x W weights of row y
  // next to each other, read sequentially by the tiles): rows[n][y][i][x] is
  // A[i, y, x] of frame n, or for the transpose A[x, y, i].
  AlignedBuffer<T> rowbuf((size_t)frames * H * W * W);
  T* rows = rowbuf.data;
#pragma omp parallel for collapse(2)
  for (int n = 0; n < frames; ++n)
    for (int y = 0; y < H; ++y) {
      const T* An = A + f.base(n, f.L) + y * W;
      T* dst = rows + ((size_t)n * H + y) * W * W;
      for (int i = 0; i < W; ++i)
        if (TRANSPOSED)
          for (int x = 0; x < W; ++x) dst[x * W + i] = An[i * S + x];
        else
          std::memcpy(dst + (size_t)i * W, An + i * S, W * sizeof(T));
    }
  // Tasks: (frame, group of channels, group of rows), with the thread's
  // scratch buffers reused across its tasks (see map_rows, map_columns); then
  // for clips (clip, row) for the temporal lines, added to what they wrote.
  const int CG = kChannelGroup, YG = kRowGroup * kMapRows;
  const int ncg = (C + CG - 1) / CG, nyg = (H + YG - 1) / YG;
#pragma omp parallel
  {
    AlignedBuffer<T> scratch((size_t)CG * YG * W);
    AlignedBuffer<vec> packed_v((size_t)CG * H);
#pragma omp for collapse(3) schedule(dynamic)
    for (int n = 0; n < frames; ++n)
      for (int cg = 0; cg < ncg; ++cg)
        for (int yg = 0; yg < nyg; ++yg) {
          const int c_begin = cg * CG, nc = std::min(C, c_begin + CG) - c_begin;
          const int y_begin = yg * YG, ny = std::min(H, y_begin + YG) - y_begin;
          const long long at = f.base(n, C) + c_begin * S;
          map_rows<T, FULL>(rows + (size_t)n * H * W * W, V + at, nc, ny, y_begin, S, W, scratch.data);
          map_columns<T, FULL>(col + (size_t)n * nxv * H * H, V + at, O + at, nc, ny, y_begin, H, S, W,
                               scratch.data, packed_v.data);
        }
  }
  if (f.T > 1) {
#pragma omp parallel
    {
      AlignedBuffer<vec> weights((size_t)f.T * f.T), packed_v((size_t)C * f.T);
#pragma omp for collapse(2) schedule(dynamic)
      for (int b = 0; b < f.B; ++b)
        for (int y = 0; y < H; ++y) {
          const long long at = f.base(b * f.T, C) + (long long)y * W;
          map_time<T, TRANSPOSED, FULL>(A + f.base(b * f.T, f.L) + (long long)y * W, V + at, O + at, C, f,
                                        weights.data, packed_v.data);
        }
    }
  }
}

template <typename T, bool TRANSPOSED>
void map3d(const T* A, const T* V, T* O, int B, int C, int T_, int H, int W) {
  const Frames f(B, T_, H, W);
  if (W >= Lanes<T, true>::size) map_lanes<T, TRANSPOSED, true>(A, V, O, C, f);
  else map_lanes<T, TRANSPOSED, false>(A, V, O, C, f);
}

template <typename T, bool TRANSPOSED>
void map(const T* A, const T* V, T* O, int B, int C, int H, int W) {
  map3d<T, TRANSPOSED>(A, V, O, B, C, 1, H, W);
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
