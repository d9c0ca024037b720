// Stand-in for CUDA's mma.h (nvcuda::wmma) on the host (SIMT shim). Every lane of a warp holds
// the whole tile of a fragment; loads are done by every lane, stores by lane 0 only (the kernel
// must synchronise before other lanes read what was stored, as on a GPU). Products are exact in
// f32 and summed in k order; tensor cores may round and order differently.
#pragma once
#include "cuda_bf16.h"
#include "cuda_fp16.h"
#include <type_traits>

namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

inline float wmma_to_f(float x) { return x; }
inline float wmma_to_f(__half x) { return __half2float(x); }
inline float wmma_to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
    static constexpr int rows = std::is_same<Use, matrix_b>::value ? K : M;
    static constexpr int cols = std::is_same<Use, matrix_a>::value ? K : N;
    float x[rows * cols];  // logical row-major tile, whatever the memory layout
};

template <typename Use, int M, int N, int K, typename T, typename Layout>
inline void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const T* p, unsigned ldm) {
    using F = fragment<Use, M, N, K, T, Layout>;
    __syncwarp();
    for (int r = 0; r < F::rows; ++r)
        for (int c = 0; c < F::cols; ++c)
            f.x[r * F::cols + c] = wmma_to_f(std::is_same<Layout, col_major>::value ? p[c * ldm + r] : p[r * ldm + c]);
    __syncwarp();
}

template <int M, int N, int K>
inline void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* p, unsigned ldm, layout_t l) {
    __syncwarp();
    for (int r = 0; r < M; ++r)
        for (int c = 0; c < N; ++c) f.x[r * N + c] = l == mem_col_major ? p[c * ldm + r] : p[r * ldm + c];
    __syncwarp();
}

template <int M, int N, int K>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t l) {
    __syncwarp();  // warp-collective: every lane has finished its earlier loads of this memory
    if (simt::lane() == 0) {
        for (int r = 0; r < M; ++r)
            for (int c = 0; c < N; ++c) (l == mem_col_major ? p[c * ldm + r] : p[r * ldm + c]) = f.x[r * N + c];
    }
    __syncwarp();
}

template <int M, int N, int K>
inline void fill_fragment(fragment<accumulator, M, N, K, float>& f, float v) {
    for (auto& e : f.x) e = v;
}

template <int M, int N, int K, typename T, typename LA, typename LB>
inline void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
                     const fragment<matrix_b, M, N, K, T, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
    float tmp[M * N];
    for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j) {
            float s = c.x[i * N + j];
            for (int k = 0; k < K; ++k) s += a.x[i * K + k] * b.x[k * N + j];
            tmp[i * N + j] = s;
        }
    std::memcpy(d.x, tmp, sizeof tmp);
}
}  // namespace wmma
}  // namespace nvcuda
