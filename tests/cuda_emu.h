// CUDA's execution model on the CPU, so that the tests run the project's CUDA source unchanged
// (g++ -std=c++14 -include cuda_emu.h models/ops/cca_cuda_abi.cu, one translation unit).
//
// What it maps:
// * __global__/__device__/__host__ are plain functions; __shared__ variables are function
//   statics, one copy per kernel instantiation, shared by the threads of the running block
//   (blocks run one after another). Dynamic shared memory (extern __shared__) is not supported.
// * A launch (CCA_LAUNCH in the CUDA source, `kernel<<<grid, block, 0, stream>>>` under nvcc)
//   checks the configuration as a GPU does (block <= 1024 threads, x/y <= 1024, z <= 64,
//   grid.x < 2^31, grid.y/z <= 65535, no zero) and otherwise records
//   cudaErrorInvalidConfiguration for cudaGetLastError. It runs every block of the grid, and
//   every thread of a block as a fiber (ucontext) with its own stack, threadIdx/blockIdx/
//   blockDim/gridDim set for it.
// * __syncthreads() is a barrier among the block's fibers: a fiber runs until it reaches a
//   barrier or ends, then the next one runs; once all have arrived, all go on. Fibers run in
//   thread order, or in reverse order (cuda_emu_set_order), so a thread runs as far ahead of
//   the others as the barriers allow: a missing barrier makes a thread read shared memory
//   that the others have not written yet, or overwrite what they have not read yet. A
//   barrier reached by some threads of a block while others have ended is an error
//   (cuda_emu_problem).
// * __half and its conversions are CUDA's own (cuda_fp16.h compiles for the host).
//
// What it cannot show: speed, anything about warps (lanes never run in lockstep here, and warp
// shuffles/votes are not provided), races between blocks (they never overlap), and the GPU's
// memory model (every write is visible at once to the next fiber).
#pragma once

#define __global__
#define __device__
#define __host__
#define __shared__ static
#define __launch_bounds__(...)

#include <cuda_fp16.h>
#include <ucontext.h>

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

static uint3 threadIdx, blockIdx;
static dim3 blockDim, gridDim;

namespace cuda_emu {

enum State { RUNNABLE, AT_BARRIER, ENDED };

constexpr size_t STACK_BYTES = 256 * 1024;  // per fiber

struct Scheduler {
  ucontext_t main_ctx;
  std::vector<ucontext_t> ctx;
  std::vector<State> state;
  std::vector<std::vector<char>> stacks;
  std::function<void()> body;
  int current = 0;
  bool reverse = false;
  cudaError_t last_error = cudaSuccess;
  long long barriers = 0;
  std::string problem;
};

inline Scheduler& scheduler() {
  static Scheduler s;
  return s;
}

inline void fiber_main() {
  Scheduler& s = scheduler();
  s.body();
  s.state[s.current] = ENDED;  // uc_link returns to the scheduler
}

inline void set_thread_index(int i) {
  threadIdx.x = i % blockDim.x;
  threadIdx.y = (i / blockDim.x) % blockDim.y;
  threadIdx.z = i / (blockDim.x * blockDim.y);
}

// Runs the threads of one block to their end; false if a barrier was reached by only some of them.
inline bool run_block(int threads) {
  Scheduler& s = scheduler();
  s.ctx.resize(threads);
  s.state.assign(threads, RUNNABLE);
  while ((int)s.stacks.size() < threads) s.stacks.emplace_back(STACK_BYTES);
  for (int i = 0; i < threads; ++i) {
    getcontext(&s.ctx[i]);
    s.ctx[i].uc_stack.ss_sp = s.stacks[i].data();
    s.ctx[i].uc_stack.ss_size = STACK_BYTES;
    s.ctx[i].uc_link = &s.main_ctx;
    makecontext(&s.ctx[i], fiber_main, 0);
  }
  for (;;) {
    for (int n = 0; n < threads; ++n) {
      const int i = s.reverse ? threads - 1 - n : n;
      if (s.state[i] != RUNNABLE) continue;
      s.current = i;
      set_thread_index(i);
      swapcontext(&s.main_ctx, &s.ctx[i]);
    }
    int waiting = 0;
    for (int i = 0; i < threads; ++i) waiting += s.state[i] == AT_BARRIER;
    if (waiting == 0) return true;
    if (waiting != threads) return false;
    ++s.barriers;
    s.state.assign(threads, RUNNABLE);
  }
}

inline bool valid_configuration(dim3 grid, dim3 block) {
  const unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
  return threads >= 1 && threads <= 1024 && block.x <= 1024 && block.y <= 1024 && block.z <= 64 &&
         grid.x >= 1 && grid.x <= 0x7fffffffu && grid.y >= 1 && grid.y <= 65535 && grid.z >= 1 && grid.z <= 65535;
}

template <typename... P>
struct Launcher {
  dim3 grid, block;
  void (*kernel)(P...);

  template <typename... Args>
  void operator()(Args... args) const {
    Scheduler& s = scheduler();
    if (!valid_configuration(grid, block)) {
      s.last_error = cudaErrorInvalidConfiguration;
      return;
    }
    void (*k)(P...) = kernel;
    s.body = [=]() { k(args...); };
    gridDim = grid;
    blockDim = block;
    const int threads = (int)(block.x * block.y * block.z);
    for (unsigned z = 0; z < grid.z; ++z)
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) {
          blockIdx.x = x, blockIdx.y = y, blockIdx.z = z;
          if (!run_block(threads) && s.problem.empty()) {
            char text[160];
            std::snprintf(text, sizeof text, "block (%u, %u, %u): __syncthreads() reached by some threads after "
                          "others had ended", x, y, z);
            s.problem = text;
          }
        }
  }
};

template <typename... P>
Launcher<P...> launcher(dim3 grid, dim3 block, cudaStream_t, void (*kernel)(P...)) {
  return Launcher<P...>{grid, block, kernel};
}

}  // namespace cuda_emu

inline void __syncthreads() {
  cuda_emu::Scheduler& s = cuda_emu::scheduler();
  s.state[s.current] = cuda_emu::AT_BARRIER;
  swapcontext(&s.ctx[s.current], &s.main_ctx);
}

#define CCA_LAUNCH(grid, block, stream, ...) ::cuda_emu::launcher(grid, block, stream, __VA_ARGS__)

extern "C" {

cudaError_t cudaGetLastError(void) {
  cudaError_t err = cuda_emu::scheduler().last_error;
  cuda_emu::scheduler().last_error = cudaSuccess;
  return err;
}

// 0: threads in order, 1: in reverse order.
void cuda_emu_set_order(int reverse) { cuda_emu::scheduler().reverse = reverse != 0; }

// Barriers completed since the library was loaded.
long long cuda_emu_barriers(void) { return cuda_emu::scheduler().barriers; }

// The first synchronisation problem seen ("" if none); cleared by the call.
const char* cuda_emu_problem(void) {
  static std::string last;
  last = cuda_emu::scheduler().problem;
  cuda_emu::scheduler().problem.clear();
  return last.c_str();
}

}  // extern "C"
