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
// Loops: OpenMP over (image, block of rows); inside, register tiles of
// [rows x channels] or [rows x positions] accumulators, each a SIMD vector
// along the contiguous x axis.
#pragma once
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

namespace cca_cpu {

constexpr int kChannelGroup = 32;  // map: channels of V kept in L2 by one task
constexpr int kRowGroup = 6;       // row tiles per task

// Register tiles: rows x channels (map) or rows x positions (weight)
// accumulators, each one vector; sized to the vector register file
// (32 registers with AVX-512, 16 with AVX2).
// Measured on Intel (Xeon) and AMD (EPYC family 26) AVX-512 machines; CCA_TILES
// (4 numbers, defined before this header) overrides them, for
// benchmarks/bench_cca_tiles.py.
#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#ifndef CCA_TILES
#define CCA_TILES 4, 4, 4, 6
#endif
#else
constexpr int kVecBytes = 32;
#ifndef CCA_TILES
#define CCA_TILES 3, 4, 2, 6
#endif
#endif
constexpr int kTiles[4] = {CCA_TILES};
constexpr int kMapRows = kTiles[0], kMapChannels = kTiles[1];
constexpr int kWeightRows = kTiles[2], kWeightPositions = kTiles[3];

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

// Calls tile(lanes, x0) for vectors covering 0..W-1. When W is at least one
// vector wide, the last vector is shifted left to end at W (overlapping the
// previous one, which writes the same values) so that every vector is full.
template <typename T, typename Tile>
inline void for_each_vector(int W, Tile tile) {
  const int VL = Lanes<T, true>::size;
  if (W >= VL) {
    for (int x0 = 0; x0 < W; x0 += VL) tile(Lanes<T, true>{VL}, std::min(x0, W - VL));
  } else {
    tile(Lanes<T, false>{W}, 0);
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
template <typename T>
void weight(const T* P, const T* Q, T* E, int B, int C, int H, int W) {
  const int YB = kWeightRows, JB = kWeightPositions;
  const int VL = Lanes<T, true>::size;
  const long long HW = (long long)H * W, L = H + W - 1;
  // Tasks: (image, vector of x). The reduction runs over channels, which are
  // HW apart in P and Q: too far for the hardware prefetcher. Each task
  // first copies its vector of x of P and Q into [row][channel] order, so
  // that the tiles below read them sequentially.
  const int nxv = (W + VL - 1) / VL;
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int b = 0; b < B; ++b)
    for (int xv = 0; xv < nxv; ++xv) {
      const T* Pb = P + b * C * HW;
      const T* Qb = Q + b * C * HW;
      T* Eb = E + b * L * HW;
      const int x0 = W >= VL ? std::min(xv * VL, W - VL) : 0;  // the last vector ends at W
      auto tile = [&](auto lanes) {
        typedef typename decltype(lanes)::vec vec;
        AlignedBuffer<vec> pbuf((size_t)H * C), qbuf((size_t)H * C);
        vec* packed_p = pbuf.data;
        vec* packed_q = qbuf.data;
        for (int y = 0; y < H; ++y)
          for (int c = 0; c < C; ++c) {
            packed_p[(size_t)y * C + c] = lanes.load(Pb + c * HW + y * W + x0);
            packed_q[(size_t)y * C + c] = lanes.load(Qb + c * HW + y * W + x0);
          }
        // Column part: positions (j, x), j over all rows; j == y is not stored.
        for (int j0 = 0; j0 < H; j0 += JB) {
          const vec* q[JB];
          for (int t = 0; t < JB; ++t) q[t] = &packed_q[(size_t)std::min(j0 + t, H - 1) * C];
          for (int y0 = 0; y0 < H; y0 += YB) {
            const vec* p[YB];
            for (int r = 0; r < YB; ++r) p[r] = &packed_p[(size_t)std::min(y0 + r, H - 1) * C];  // clamped rows: computed, not stored
            vec acc[YB][JB] = {};
            for (int c = 0; c < C; ++c)
              for (int r = 0; r < YB; ++r)
                for (int t = 0; t < JB; ++t) acc[r][t] += p[r][c] * q[t][c];
            for (int r = 0; r < YB && y0 + r < H; ++r)
              for (int t = 0; t < JB && j0 + t < H; ++t) {
                const int y = y0 + r, j = j0 + t;
                if (j != y) lanes.store(Eb + col_slot(j, y, W) * HW + y * W + x0, acc[r][t]);
              }
          }
        }
        // Row part: positions (y, i), i over the whole row.
        for (int y0 = 0; y0 < H; y0 += YB) {
          int ys[YB];
          for (int r = 0; r < YB; ++r) ys[r] = std::min(y0 + r, H - 1);
          for (int i0 = 0; i0 < W; i0 += JB) {
            int is[JB];
            for (int t = 0; t < JB; ++t) is[t] = std::min(i0 + t, W - 1);
            vec acc[YB][JB] = {};
            for (int c = 0; c < C; ++c) {
              for (int r = 0; r < YB; ++r) {
                const vec p = packed_p[(size_t)ys[r] * C + c];
                const T* qrow = Qb + c * HW + ys[r] * W;
                for (int t = 0; t < JB; ++t) acc[r][t] += p * qrow[is[t]];
              }
            }
            for (int r = 0; r < YB && y0 + r < H; ++r)
              for (int t = 0; t < JB && i0 + t < W; ++t)
                lanes.store(Eb + (i0 + t) * HW + (y0 + r) * W + x0, acc[r][t]);
          }
        }
      };
      if (W >= VL) tile(Lanes<T, true>{VL});
      else tile(Lanes<T, false>{W});
    }
}

// O = map<TRANSPOSED>(A, V); A: [B, H+W-1, H, W], V, O: [B, C, H, W].
template <typename T, bool TRANSPOSED>
void map(const T* A, const T* V, T* O, int B, int C, int H, int W) {
  const int YB = kMapRows, CB = kMapChannels;
  const long long HW = (long long)H * W, L = H + W - 1;
  // Row part of A in [i, y, x] order: A itself, or for the transpose a copy
  // with A[x, y, i] moved to [i, y, x], so that x stays the contiguous axis.
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
  // V (kChannelGroup x H x W) stays in L2 while the group's rows go by, and
  // the attention weights of one tile of rows stay in L1 while the group's
  // channels stream past them.
  const int CG = kChannelGroup, YG = kRowGroup * YB;
  const int ncg = (C + CG - 1) / CG, nyg = (H + YG - 1) / YG;
#pragma omp parallel for collapse(3) schedule(dynamic)
  for (int b = 0; b < B; ++b)
    for (int cg = 0; cg < ncg; ++cg)
      for (int yg = 0; yg < nyg; ++yg) {
        const T* Ab = A + b * L * HW;
        const T* Rb = R + b * r_batch;
        const T* Vb = V + b * C * HW;
        T* Ob = O + b * C * HW;
        const int c_end = std::min(C, (cg + 1) * CG);
        for (int y0 = yg * YG; y0 < std::min(H, (yg + 1) * YG); y0 += YB) {
          int ys[YB];
          for (int r = 0; r < YB; ++r) ys[r] = std::min(y0 + r, H - 1);  // clamped: extra rows are computed, not stored
          const int ny = std::min(YB, H - y0);
          for_each_vector<T>(W, [&](auto lanes, int x0) {
            typedef typename decltype(lanes)::vec vec;
            // This tile's attention weights in the order the loops read them:
            // column positions [j][row] (zero where j == y), then row
            // positions [i][row]; every channel of the group reuses them.
            AlignedBuffer<vec> abuf((size_t)(H + W) * YB);
            vec* a_col = abuf.data;
            vec* a_row = abuf.data + (size_t)H * YB;
            for (int j = 0; j < H; ++j)
              for (int r = 0; r < YB; ++r) {
                const int y = ys[r];
                const T* src = TRANSPOSED ? Ab + col_slot(y, j, W) * HW + j * W + x0
                                          : Ab + col_slot(j, y, W) * HW + y * W + x0;
                a_col[j * YB + r] = j == y ? vec{} : lanes.load(src);
              }
            for (int i = 0; i < W; ++i)
              for (int r = 0; r < YB; ++r) a_row[i * YB + r] = lanes.load(Rb + i * HW + ys[r] * W + x0);
            for (int c0 = cg * CG; c0 < c_end; c0 += CB) {
              int cs[CB];
              for (int t = 0; t < CB; ++t) cs[t] = std::min(c0 + t, c_end - 1);
              vec acc[CB][YB] = {};
              // Column part: pixels (j, x), j != y (a_col is zero there).
              for (int j = 0; j < H; ++j)
                for (int t = 0; t < CB; ++t) {
                  const vec v = lanes.load(Vb + cs[t] * HW + j * W + x0);
                  for (int r = 0; r < YB; ++r) acc[t][r] += v * a_col[j * YB + r];
                }
              // Row part: pixels (y, i).
              for (int i = 0; i < W; ++i)
                for (int r = 0; r < YB; ++r)
                  for (int t = 0; t < CB; ++t) acc[t][r] += a_row[i * YB + r] * Vb[cs[t] * HW + ys[r] * W + i];
              for (int t = 0; t < CB && c0 + t < c_end; ++t)
                for (int r = 0; r < ny; ++r) lanes.store(Ob + (c0 + t) * HW + ys[r] * W + x0, acc[t][r]);
            }
          });
        }
      }
}

}  // namespace cca_cpu
