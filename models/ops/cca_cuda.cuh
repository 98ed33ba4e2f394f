// Criss-cross attention: CUDA kernels (C++14; plain pointers and sizes).
//
// Layout and functions of the 2-D op are those of cca_cpu.h, with L = H + W - 1 and
// s(j, y) = W + j - (j > y):
//   weight(P, Q) -> E [B, L, H, W]
//       E[i, y, x]      = sum_c P[c, y, x] * Q[c, y, i]
//       E[s(j,y), y, x] = sum_c P[c, y, x] * Q[c, j, x]                            (j != y)
//   map<TRANSPOSED>(A, V) -> O [B, C, H, W]
//       O[c, y, x] = sum_i V[c, y, i] * A[i, y, x] + sum_{j!=y} V[c, j, x] * A[s(j,y), y, x]   (false)
//       O[c, y, x] = sum_i V[c, y, i] * A[x, y, i] + sum_{j!=y} V[c, j, x] * A[s(y,j), j, x]   (true)
// The 3-D (video) op, models/ops/cca3d.py, over clips [B, C, T, H, W] adds the time line: L = T + H + W - 2
// slots, the first H + W - 1 those of the 2-D op within frame t, then r(s, t) = W + H - 1 + s - (s > t):
//   weight3d(P, Q) -> E [B, L, T, H, W]
//       E[i, t, y, x]      = sum_c P[c, t, y, x] * Q[c, t, y, i]
//       E[s(j,y), t, y, x] = sum_c P[c, t, y, x] * Q[c, t, j, x]                   (j != y)
//       E[r(s,t), t, y, x] = sum_c P[c, t, y, x] * Q[c, s, y, x]                   (s != t)
//   map3d<TRANSPOSED>(A, V) -> O [B, C, T, H, W]: the row, column and time sums of map, each with the
//       attention of the slots above (TRANSPOSED: A[x, t, y, i], A[s(y,j), t, j, x], A[r(t,s), s, y, x]).
// The 2-D functions are the 3-D ones at T = 1 (the same launches).
//
// Each function is a row family and two line families of small matrix products (the time family is
// empty at T = 1, the column family at H = 1); two kernels compute them:
// * the row family, one product per (image, frame t, row y): for weight W x W over K = C channels, for
//   map C x W over K = W. The rows of all frames are one run of T*H rows, W apart. row_kernel is a tiled
//   GEMM: a block of 64 threads computes a 32 x 32 output tile, each thread 4 x 4 outputs in registers,
//   over K in chunks of 16 staged in shared memory. An operand whose contiguous axis is K (V, and A in
//   the transposed map) is read along K and stored transposed in shared memory, so every global read
//   is coalesced; the transposed map is an index swap here, never a strided read.
// * the line families, one product per (image, line, x): for weight N x N over K = C, for map C x N over
//   K = N, where a line is N points a fixed stride apart: the column (N = H points W apart, one line per
//   frame, slots from W) and the time line (N = T points H*W apart, one line per row y, slots from
//   W + H - 1). x is the contiguous axis of every operand in both, so col_kernel gives a block 32
//   adjacent x, one per lane, and a 16 x 16 tile of the product: each of its 8 warps holds 4 x 8 outputs
//   per lane in registers, over K in chunks of 8 (float) or 4 (double) staged in shared memory (32 KB);
//   a line shorter than 16 points (a clip of a few frames) leaves the rest of the tile zero padding.
//   The self position (j == y, s == t) is skipped by the slot formula.
// Channels and slots are planes T*H*W apart. map runs the row kernel (which writes O), then the column
// and the time line (which add to O), in that order on one stream: no atomics, the same sums every run.
//
// Accumulation in float for float and half (half is converted on load and rounded once per
// kernel on store), in double for double. Indices inside a tile are 32-bit; image offsets and
// strides are 64-bit, so tensors above 2^31 elements are addressed correctly. Blocks are numbered
// along grid.x only (up to 2^31 - 1 blocks; y and z stay 1). Each launcher returns the first CUDA
// error (cudaGetLastError after every launch), cudaSuccess otherwise.
//
// The source is C++14 and compiles three ways: by Jittor (jt.code, models/ops/cca.py), by nvcc for
// the tests' compile check and the GPU benchmark (cca_cuda_abi.cu), and by g++ with the tests'
// CPU emulation of CUDA (tests/cuda_emu.h), which defines CCA_LAUNCH.
#pragma once
#include <cuda_fp16.h>

#ifndef CCA_LAUNCH
#define CCA_LAUNCH(grid, block, stream, ...) __VA_ARGS__<<<grid, block, 0, stream>>>
#endif

namespace cca_cuda {

template <typename T> struct Acc { typedef float type; };
template <> struct Acc<double> { typedef double type; };

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
template <typename T> __device__ __forceinline__ T from_acc(float v) { return (T)v; }
template <> __device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half(v); }
template <typename T> __device__ __forceinline__ T from_acc(double v) { return (T)v; }

// -- row family ---------------------------------------------------------------------------

constexpr int ROW_TILE = 32;                            // output tile, both axes
constexpr int ROW_REG = 4;                              // outputs per thread, both axes
constexpr int ROW_SPAN = ROW_TILE / ROW_REG;            // threads per axis
constexpr int ROW_THREADS = ROW_SPAN * ROW_SPAN;        // 64
constexpr int ROW_K = 16;                               // K per shared-memory chunk

// Out[m, n] = sum_k A(m, k) * B(k, n) for every (image b, row r < rows); all three start at
// b * *_img + r * W, and the element (i, j) of each is at i * stride_i + j * stride_j.
struct RowProduct {
  int M, N, K, rows, W;
  long long a_img, a_m, a_k;
  long long b_img, b_k, b_n;
  long long o_img, o_m, o_n;
};

// tile[k][i] = src(i0 + i, k0 + k), zero outside I x K. Lanes run along whichever axis is
// contiguous in memory; the +1 padding keeps the transposed stores free of bank conflicts.
template <typename T, typename acc_t>
__device__ __forceinline__ void load_row_tile(acc_t (*tile)[ROW_TILE + 1], const T* __restrict__ src,
                                              long long s_i, long long s_k, int i0, int k0, int I, int K) {
  const bool along_k = s_k == 1 && s_i != 1;
  for (int e = threadIdx.x; e < ROW_K * ROW_TILE; e += ROW_THREADS) {
    const int i = along_k ? e / ROW_K : e % ROW_TILE;
    const int k = along_k ? e % ROW_K : e / ROW_TILE;
    const int gi = i0 + i, gk = k0 + k;
    tile[k][i] = (gi < I && gk < K) ? to_acc(src[gi * s_i + gk * s_k]) : (acc_t)0;
  }
}

template <typename T>
__global__ void __launch_bounds__(ROW_THREADS)
row_kernel(const T* __restrict__ A, const T* __restrict__ Bm, T* __restrict__ Out, RowProduct p) {
  typedef typename Acc<T>::type acc_t;
  __shared__ acc_t As[ROW_K][ROW_TILE + 1];
  __shared__ acc_t Bs[ROW_K][ROW_TILE + 1];
  const int n_tiles = (p.N + ROW_TILE - 1) / ROW_TILE, m_tiles = (p.M + ROW_TILE - 1) / ROW_TILE;
  int t = blockIdx.x;
  const int n0 = (t % n_tiles) * ROW_TILE;
  t /= n_tiles;
  const int m0 = (t % m_tiles) * ROW_TILE;
  t /= m_tiles;
  const int y = t % p.rows, b = t / p.rows;
  const long long row = (long long)y * p.W;
  const T* a = A + b * p.a_img + row;
  const T* bm = Bm + b * p.b_img + row;
  T* o = Out + b * p.o_img + row;
  const int tm = threadIdx.x / ROW_SPAN, tn = threadIdx.x % ROW_SPAN;

  acc_t acc[ROW_REG][ROW_REG];
  for (int r = 0; r < ROW_REG; ++r)
    for (int s = 0; s < ROW_REG; ++s) acc[r][s] = 0;
  for (int k0 = 0; k0 < p.K; k0 += ROW_K) {
    load_row_tile(As, a, p.a_m, p.a_k, m0, k0, p.M, p.K);
    load_row_tile(Bs, bm, p.b_n, p.b_k, n0, k0, p.N, p.K);
    __syncthreads();
#pragma unroll 4
    for (int k = 0; k < ROW_K; ++k) {
      acc_t av[ROW_REG], bv[ROW_REG];
      for (int r = 0; r < ROW_REG; ++r) av[r] = As[k][tm + ROW_SPAN * r];
      for (int s = 0; s < ROW_REG; ++s) bv[s] = Bs[k][tn + ROW_SPAN * s];
      for (int r = 0; r < ROW_REG; ++r)
        for (int s = 0; s < ROW_REG; ++s) acc[r][s] += av[r] * bv[s];
    }
    __syncthreads();
  }
  for (int r = 0; r < ROW_REG; ++r) {
    const int m = m0 + tm + ROW_SPAN * r;
    for (int s = 0; s < ROW_REG; ++s) {
      const int n = n0 + tn + ROW_SPAN * s;
      if (m < p.M && n < p.N) o[m * p.o_m + n * p.o_n] = from_acc<T>(acc[r][s]);
    }
  }
}

// -- line families (column, time line) ------------------------------------------------------

constexpr int COL_LANES = 32;                           // adjacent x per block
constexpr int COL_WARPS = 8;
constexpr int COL_THREADS = COL_LANES * COL_WARPS;     // 256
constexpr int COL_TILE = 16;                            // product tile, both axes
constexpr int COL_RM = 4, COL_RN = 8;                   // outputs per lane: 4 (m) x 8 (n)
constexpr int COL_MSPAN = COL_TILE / COL_RM;           // warps along m (4); along n: COL_TILE / COL_RN = 2
template <typename acc_t> struct ColK { static constexpr int value = 32 / (int)sizeof(acc_t); };  // 8 or 4

enum ColMode { COL_WEIGHT, COL_MAP, COL_MAP_T };

// For every (image b, line l < lines, x < W): all three operands start at b * *_img + l * line + x,
// consecutive points of the line are step apart, channels and slots plane apart, and point j of the
// line is slot s(j, y) = base + j - (j > y) of point y:
//   COL_WEIGHT: Out = E, A(m=j, k=c) = Q[c, j], B(k=c, n=y) = P[c, y], E[s(j,y), y] = (AB)[j, y], j != y
//   COL_MAP:    Out = O, A(m=c, k=j) = V[c, j], B(k=j, n=y) = A_att[s(j,y), y] (0 at j == y), O += AB
//   COL_MAP_T:  as COL_MAP with B(k=j, n=y) = A_att[s(y,j), j]
struct ColProduct {
  int M, N, K, W, lines, base;
  long long a_img, a_m, a_k;  // the A operand: image stride and element strides (x is contiguous)
  long long b_img, o_img;
  long long line, plane, step;
};

template <int MODE>
__device__ __forceinline__ long long col_b_offset(int k, int n, int base, long long plane, long long step) {
  // COL_WEIGHT: B(c, y) = P[c, y]. COL_MAP(_T): the slot of point j = k for point y = n; -1 at j == y.
  if (MODE == COL_WEIGHT) return k * plane + n * step;
  if (k == n) return -1;
  if (MODE == COL_MAP) return (base + k - (k > n)) * plane + n * step;
  return (base + n - (n > k)) * plane + k * step;
}

template <typename T, int MODE>
__global__ void __launch_bounds__(COL_THREADS)
col_kernel(const T* __restrict__ A, const T* __restrict__ Bm, T* __restrict__ Out, ColProduct p) {
  typedef typename Acc<T>::type acc_t;
  constexpr int KC = ColK<acc_t>::value;
  __shared__ acc_t As[KC][COL_TILE][COL_LANES];
  __shared__ acc_t Bs[KC][COL_TILE][COL_LANES];
  const int x_tiles = (p.W + COL_LANES - 1) / COL_LANES;
  const int n_tiles = (p.N + COL_TILE - 1) / COL_TILE, m_tiles = (p.M + COL_TILE - 1) / COL_TILE;
  int t = blockIdx.x;
  const int x0 = (t % x_tiles) * COL_LANES;
  t /= x_tiles;
  const int n0 = (t % n_tiles) * COL_TILE;
  t /= n_tiles;
  const int m0 = (t % m_tiles) * COL_TILE;
  t /= m_tiles;
  const int line = t % p.lines, b = t / p.lines;
  const long long start = line * p.line + x0;
  const T* a = A + b * p.a_img + start;
  const T* bm = Bm + b * p.b_img + start;
  const int lane = threadIdx.x, warp = threadIdx.y, tid = warp * COL_LANES + lane;
  const int wm = warp % COL_MSPAN, wn = warp / COL_MSPAN;
  const bool x_in = x0 + lane < p.W;

  acc_t acc[COL_RM][COL_RN];
  for (int r = 0; r < COL_RM; ++r)
    for (int s = 0; s < COL_RN; ++s) acc[r][s] = 0;
  for (int k0 = 0; k0 < p.K; k0 += KC) {
    for (int e = tid; e < KC * COL_TILE * COL_LANES; e += COL_THREADS) {
      const int l = e % COL_LANES, i = (e / COL_LANES) % COL_TILE, k = e / (COL_LANES * COL_TILE);
      const int gk = k0 + k, gm = m0 + i, gn = n0 + i;
      const bool in = x0 + l < p.W && gk < p.K;
      As[k][i][l] = (in && gm < p.M) ? to_acc(a[gm * p.a_m + gk * p.a_k + l]) : (acc_t)0;
      const long long off = (in && gn < p.N) ? col_b_offset<MODE>(gk, gn, p.base, p.plane, p.step) : -1;
      Bs[k][i][l] = off >= 0 ? to_acc(bm[off + l]) : (acc_t)0;
    }
    __syncthreads();
#pragma unroll 2
    for (int k = 0; k < KC; ++k) {
      acc_t av[COL_RM], bv[COL_RN];
      for (int r = 0; r < COL_RM; ++r) av[r] = As[k][wm + COL_MSPAN * r][lane];
      for (int s = 0; s < COL_RN; ++s) bv[s] = Bs[k][wn + 2 * s][lane];
      for (int r = 0; r < COL_RM; ++r)
        for (int s = 0; s < COL_RN; ++s) acc[r][s] += av[r] * bv[s];
    }
    __syncthreads();
  }
  if (!x_in) return;
  T* o = Out + b * p.o_img + start + lane;
  for (int r = 0; r < COL_RM; ++r) {
    const int m = m0 + wm + COL_MSPAN * r;
    for (int s = 0; s < COL_RN; ++s) {
      const int n = n0 + wn + 2 * s;
      if (m >= p.M || n >= p.N) continue;
      if (MODE == COL_WEIGHT) {
        if (m != n) o[(p.base + m - (m > n)) * p.plane + n * p.step] = from_acc<T>(acc[r][s]);
      } else {
        T& out = o[m * p.plane + n * p.step];
        out = from_acc<T>(to_acc(out) + acc[r][s]);
      }
    }
  }
}

// -- launchers ----------------------------------------------------------------------------

inline long long cdiv(long long a, long long b) { return (a + b - 1) / b; }

template <typename T>
cudaError_t launch_rows(const T* A, const T* Bm, T* Out, int B, const RowProduct& p, cudaStream_t stream) {
  const long long blocks = (long long)B * p.rows * cdiv(p.M, ROW_TILE) * cdiv(p.N, ROW_TILE);
  if (blocks == 0) return cudaSuccess;
  if (blocks > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  CCA_LAUNCH(dim3((unsigned)blocks), dim3(ROW_THREADS), stream, row_kernel<T>)(A, Bm, Out, p);
  return cudaGetLastError();
}

template <typename T, int MODE>
cudaError_t launch_cols(const T* A, const T* Bm, T* Out, int B, const ColProduct& p, cudaStream_t stream) {
  const long long blocks =
      (long long)B * p.lines * cdiv(p.W, COL_LANES) * cdiv(p.M, COL_TILE) * cdiv(p.N, COL_TILE);
  if (blocks == 0) return cudaSuccess;
  if (blocks > 0x7fffffffLL) return cudaErrorInvalidConfiguration;
  CCA_LAUNCH(dim3((unsigned)blocks), dim3(COL_LANES, COL_WARPS), stream, col_kernel<T, MODE>)(A, Bm, Out, p);
  return cudaGetLastError();
}

// The lines of a clip [*, T, H, W]: N points step apart, lines per image line apart, slots from base.
struct Line {
  int N, lines, base;
  long long line, step;
};

inline Line column_line(int T_, int H, int W) { return {H, T_, W, (long long)H * W, W}; }
inline Line time_line(int T_, int H, int W) { return {T_, H, W + H - 1, W, (long long)H * W}; }

// weight along a line: A = Q (m = point j, k = channel), B = P, Out = E; planes of plane elements, L slots.
inline ColProduct weight_line(const Line& g, int C, int W, long long plane, long long L) {
  return {g.N, g.N, C, W, g.lines, g.base, C * plane, g.step, plane, C * plane, L * plane, g.line, plane, g.step};
}

// map along a line: A = V (m = channel, k = point j), B = the attention, Out = O.
inline ColProduct map_line(const Line& g, int C, int W, long long plane, long long L) {
  return {C, g.N, g.N, W, g.lines, g.base, C * plane, plane, g.step, L * plane, C * plane, g.line, plane, g.step};
}

// E = weight3d(P, Q): P, Q [B, C, T, H, W], E [B, T+H+W-2, T, H, W].
template <typename T>
cudaError_t weight3d(const T* P, const T* Q, T* E, int B, int C, int T_, int H, int W, cudaStream_t stream = 0) {
  const long long plane = (long long)T_ * H * W, L = T_ + H + W - 2;
  const RowProduct rows = {W, W, C, T_ * H, W, C * plane, 1, plane, C * plane, plane, 1, L * plane, plane, 1};
  cudaError_t err = launch_rows<T>(Q, P, E, B, rows, stream);
  if (err == cudaSuccess && H > 1)
    err = launch_cols<T, COL_WEIGHT>(Q, P, E, B, weight_line(column_line(T_, H, W), C, W, plane, L), stream);
  if (err == cudaSuccess && T_ > 1)
    err = launch_cols<T, COL_WEIGHT>(Q, P, E, B, weight_line(time_line(T_, H, W), C, W, plane, L), stream);
  return err;
}

// O = map3d<TRANSPOSED>(A, V): A [B, T+H+W-2, T, H, W], V and O [B, C, T, H, W].
template <typename T, bool TRANSPOSED>
cudaError_t map3d(const T* A, const T* V, T* O, int B, int C, int T_, int H, int W, cudaStream_t stream = 0) {
  constexpr int MODE = TRANSPOSED ? COL_MAP_T : COL_MAP;
  const long long plane = (long long)T_ * H * W, L = T_ + H + W - 2;
  const RowProduct rows = {C, W, W, T_ * H, W, C * plane, plane, 1, L * plane, TRANSPOSED ? 1 : plane,
                           TRANSPOSED ? plane : 1, C * plane, plane, 1};
  cudaError_t err = launch_rows<T>(V, A, O, B, rows, stream);
  if (err == cudaSuccess && H > 1)
    err = launch_cols<T, MODE>(V, A, O, B, map_line(column_line(T_, H, W), C, W, plane, L), stream);
  if (err == cudaSuccess && T_ > 1)
    err = launch_cols<T, MODE>(V, A, O, B, map_line(time_line(T_, H, W), C, W, plane, L), stream);
  return err;
}

// E = weight(P, Q): P, Q [B, C, H, W], E [B, H+W-1, H, W].
template <typename T>
cudaError_t weight(const T* P, const T* Q, T* E, int B, int C, int H, int W, cudaStream_t stream = 0) {
  return weight3d<T>(P, Q, E, B, C, 1, H, W, stream);
}

// O = map<TRANSPOSED>(A, V): A [B, H+W-1, H, W], V and O [B, C, H, W].
template <typename T, bool TRANSPOSED>
cudaError_t map(const T* A, const T* V, T* O, int B, int C, int H, int W, cudaStream_t stream = 0) {
  return map3d<T, TRANSPOSED>(A, V, O, B, C, 1, H, W, stream);
}

}  // namespace cca_cuda
