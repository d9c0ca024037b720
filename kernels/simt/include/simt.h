// SIMT shim: compile the project's unmodified CUDA kernels (kernels/cuda/*.cu) with the host C++
// compiler and run them on the CPU, one CUDA thread per OS thread, for checking their logic against
// the CPU twins without a GPU (kernels/simt/tests). Included through the stand-in headers
// cuda_fp16.h, cuda_bf16.h and mma.h of this folder.
//
// Model: one launch at a time (a process-wide lock); the thread blocks of a launch run one after
// another on blockDim OS threads, so `__shared__` is plain static storage. `__syncthreads` is a
// barrier over the block's threads that are still running (a thread that returns drops out, as on
// a GPU); warp shuffles and `__syncwarp` go through a per-warp barrier and scratch slots. WMMA
// fragments hold the whole 16x16 tile in every lane (mma.h).
// Not modelled (say so wherever results are reported): blocks running concurrently, lockstep
// execution inside a warp, `__expf`'s reduced accuracy (here libm's expf), memory coalescing and
// every other performance property.
#pragma once
#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace simt {

// A barrier whose party count shrinks when a thread leaves (arrive_and_drop).
class Barrier {
  public:
    void reset(int n) {
        std::lock_guard<std::mutex> g(m_);
        expected_ = n;
        count_ = 0;
    }
    void arrive_and_wait() {
        std::unique_lock<std::mutex> lk(m_);
        const unsigned long gen = gen_;
        if (++count_ >= expected_) {
            release();
        } else {
            cv_.wait(lk, [&] { return gen_ != gen; });
        }
    }
    void drop() {
        std::lock_guard<std::mutex> g(m_);
        --expected_;
        if (count_ > 0 && count_ >= expected_) release();
    }

  private:
    void release() {
        count_ = 0;
        ++gen_;
        cv_.notify_all();
    }
    std::mutex m_;
    std::condition_variable cv_;
    int expected_ = 0, count_ = 0;
    unsigned long gen_ = 0;
};

struct Warp {
    Barrier bar;
    uint64_t slot[32];
};

struct Launch {
    dim3 grid, block;
    Barrier block_bar;
    std::vector<Warp> warps;
};

inline thread_local dim3 tl_thread, tl_block;
inline thread_local Launch* tl_launch = nullptr;
inline dim3 g_grid, g_block;

inline std::mutex& launch_lock() {
    static std::mutex m;
    return m;
}

inline int lane() { return (int)(tl_thread.x % 32); }
inline Warp& warp() { return tl_launch->warps[tl_thread.x / 32]; }

// Run `kernel` over `grid` x `block` (1-D blocks: block.y == block.z == 1).
inline void launch(dim3 grid, dim3 block, const std::function<void()>& kernel) {
    std::lock_guard<std::mutex> g(launch_lock());
    Launch L;
    L.grid = grid;
    L.block = block;
    g_grid = grid;
    g_block = block;
    const int nt = (int)block.x;
    const int nw = (nt + 31) / 32;
    L.warps = std::vector<Warp>(nw);
    Barrier start;  // every thread, between blocks; never dropped
    start.reset(nt);
    std::vector<std::thread> threads;
    threads.reserve(nt);
    for (int t = 0; t < nt; ++t) {
        threads.emplace_back([&, t] {
            tl_launch = &L;
            tl_thread = dim3(t, 0, 0);
            for (unsigned bz = 0; bz < grid.z; ++bz)
                for (unsigned by = 0; by < grid.y; ++by)
                    for (unsigned bx = 0; bx < grid.x; ++bx) {
                        if (t == 0) {
                            L.block_bar.reset(nt);
                            for (int w = 0; w < nw; ++w) L.warps[w].bar.reset(std::min(32, nt - 32 * w));
                        }
                        start.arrive_and_wait();  // resets above are visible, the previous block is done
                        tl_block = dim3(bx, by, bz);
                        kernel();
                        L.block_bar.drop();
                        L.warps[t / 32].bar.drop();
                        start.arrive_and_wait();  // nobody resets while another thread is still inside
                    }
            tl_launch = nullptr;
        });
    }
    for (auto& th : threads) th.join();
}

template <typename T>
inline T shfl(T v, int src_lane) {
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    Warp& w = warp();
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    w.slot[lane()] = bits;
    w.bar.arrive_and_wait();
    uint64_t got = w.slot[src_lane];
    w.bar.arrive_and_wait();
    T out;
    std::memcpy(&out, &got, sizeof(T));
    return out;
}

}  // namespace simt

#define threadIdx (simt::tl_thread)
#define blockIdx (simt::tl_block)
#define blockDim (simt::g_block)
#define gridDim (simt::g_grid)
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)

inline void __syncthreads() { simt::tl_launch->block_bar.arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { simt::warp().bar.arrive_and_wait(); }
template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int lane_mask, int width = 32) {
    const int l = simt::lane();
    const int src = l ^ lane_mask;
    return simt::shfl(v, (src / width == l / width) ? src : l);
}
template <typename T>
inline T __shfl_sync(unsigned, T v, int src_lane, int width = 32) {
    const int l = simt::lane();
    return simt::shfl(v, (l / width) * width + src_lane % width);
}
inline float __expf(float x) { return expf(x); }
using std::max;
using std::min;
