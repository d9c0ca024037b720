// Paged attention for prefill chunks in the flash-attention-2 style: a thread block takes a tile
// of up to PF_M query rows of one sequence and one query head, streams that sequence's keys and
// values PF_N at a time through its block table (the cached prefix and the causal part of the
// chunk: `pos0 > 0` is the normal case with chunked prefill and the prefix cache), keeps a running
// max and sum per row (online softmax, f32) and accumulates the output in f32 in shared memory.
// bf16/f16: Q·Kᵀ and P·V on tensor cores (WMMA 16x16x16, f32 accumulators; P rounded to the
// storage type, as flash-attention 2 does). f32: the same tiling on SIMT cores.
//
// CPU twin and reference: hhh_kernels::cpu::paged_attention (kernels/src/cpu.rs). Host-side tile
// plan: hhh_kernels::plan::AttnPlan (kernels/src/plan.rs).
//
// out, q:          [num_rows, num_heads, HD] (q with RoPE applied; out written only for tile rows)
// key/value_cache: [num_blocks, block_size, num_kv_heads, HD]            (kernels/src/paged.rs)
// block_tables:    [num_seqs, max_blocks_per_seq] int32
// tiles:           [num_tiles, 4] int32: seq, first row (in q/out), rows (1..=PF_M), position of
//                  the first row. Row r of a tile sits at position pos0 + r and attends to
//                  positions 0..=pos0 + r of its sequence.
// Launch: grid (num_tiles, num_heads), block PF_THREADS, static shared memory only.
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <mma.h>
#include <float.h>
#include <stdint.h>

#define PF_M 16
#define PF_THREADS 128
#define PF_GROUP 8  // threads per query row in the softmax step: PF_M * PF_GROUP == PF_THREADS

__device__ __forceinline__ float pf_to_f(float x) { return x; }
__device__ __forceinline__ float pf_to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float pf_to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T pf_from_f(float x);
template <> __device__ __forceinline__ float pf_from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half pf_from_f<__half>(float x) { return __float2half(x); }
template <> __device__ __forceinline__ __nv_bfloat16 pf_from_f<__nv_bfloat16>(float x) { return __float2bfloat16(x); }

// S[PF_M x N] = Q[PF_M x HD] · K[N x HD]ᵀ on tensor cores: warp w computes columns 16w..16w+15.
template <typename T, int HD, int N>
__device__ __forceinline__ void scores_tc(float* s, const T* qs, const T* ks) {
    using namespace nvcuda;
    const int warp = threadIdx.x / 32;
    if (warp < N / 16) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
        wmma::fill_fragment(acc, 0.f);
        for (int kk = 0; kk < HD / 16; ++kk) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;
            wmma::load_matrix_sync(a, qs + kk * 16, HD);
            wmma::load_matrix_sync(b, ks + warp * 16 * HD + kk * 16, HD);
            wmma::mma_sync(acc, a, b, acc);
        }
        wmma::store_matrix_sync(s + warp * 16, acc, N, wmma::mem_row_major);
    }
}

// O[PF_M x HD] += P[PF_M x N] · V[N x HD] on tensor cores: warps take 16-column slices of O.
template <typename T, int HD, int N>
__device__ __forceinline__ void pv_tc(float* o, const T* p, const T* vs) {
    using namespace nvcuda;
    for (int c = threadIdx.x / 32; c < HD / 16; c += PF_THREADS / 32) {
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
        wmma::load_matrix_sync(acc, o + c * 16, HD, wmma::mem_row_major);
        for (int kk = 0; kk < N / 16; ++kk) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;
            wmma::load_matrix_sync(a, p + kk * 16, N);
            wmma::load_matrix_sync(b, vs + kk * 16 * HD + c * 16, HD);
            wmma::mma_sync(acc, a, b, acc);
        }
        wmma::store_matrix_sync(o + c * 16, acc, HD, wmma::mem_row_major);
    }
}

// The same two products on SIMT cores (f32 storage).
template <typename T, typename P, int HD, int N>
__device__ __forceinline__ void scores_simt(float* s, const T* qs, const T* ks) {
    for (int i = threadIdx.x; i < PF_M * N; i += PF_THREADS) {
        const int r = i / N, j = i % N;
        float acc = 0.f;
#pragma unroll 8
        for (int d = 0; d < HD; ++d) acc = fmaf(pf_to_f(qs[r * HD + d]), pf_to_f(ks[j * HD + d]), acc);
        s[i] = acc;
    }
}

template <typename T, typename P, int HD, int N>
__device__ __forceinline__ void pv_simt(float* o, const P* p, const T* vs) {
    for (int i = threadIdx.x; i < PF_M * HD; i += PF_THREADS) {
        const int r = i / HD, d = i % HD;
        float acc = o[i];
#pragma unroll 8
        for (int j = 0; j < N; ++j) acc = fmaf(pf_to_f(p[r * N + j]), pf_to_f(vs[j * HD + d]), acc);
        o[i] = acc;
    }
}

// T: storage type of q/out and the cache; HD: head dim; N: keys per iteration; TC: tensor cores.
template <typename T, int HD, int N, bool TC>
__device__ void prefill(T* __restrict__ out, const T* __restrict__ q, const T* __restrict__ key_cache,
                        const T* __restrict__ value_cache, const int* __restrict__ block_tables,
                        const int* __restrict__ tiles, int num_kv_heads, int block_size, int max_blocks_per_seq,
                        float scale) {
    const int head = blockIdx.y, num_heads = gridDim.y;
    const int* td = tiles + (int64_t)blockIdx.x * 4;
    const int seq = td[0], row0 = td[1], nrows = td[2], pos0 = td[3];
    const int kv_head = head / (num_heads / num_kv_heads);
    const int tid = threadIdx.x;
    __shared__ __align__(32) T qs[PF_M * HD];
    __shared__ __align__(32) T ks[N * HD];
    __shared__ __align__(32) T vs[N * HD];
    __shared__ __align__(32) float s[PF_M * N];
    __shared__ __align__(32) T p[PF_M * N];
    __shared__ __align__(32) float o[PF_M * HD];
    __shared__ float row_max[PF_M];
    __shared__ float row_sum[PF_M];
    for (int i = tid; i < PF_M * HD; i += PF_THREADS) {
        const int r = i / HD, d = i % HD;
        qs[i] = r < nrows ? q[((int64_t)(row0 + r) * num_heads + head) * HD + d] : pf_from_f<T>(0.f);
        o[i] = 0.f;
    }
    if (tid < PF_M) {
        row_max[tid] = -FLT_MAX;
        row_sum[tid] = 0.f;
    }
    const int kv_end = pos0 + nrows;  // keys 0..kv_end are read
    const int* table = block_tables + (int64_t)seq * max_blocks_per_seq;
    const int64_t slot_stride = (int64_t)num_kv_heads * HD;
    // The softmax step: row r is handled by PF_GROUP consecutive threads (one warp holds 4 rows).
    const int r = tid / PF_GROUP, g = tid % PF_GROUP;
    for (int k0 = 0; k0 < kv_end; k0 += N) {
        __syncthreads();  // the previous iteration is done with ks, vs and p (and the set-up with qs, o)
        for (int i = tid; i < N * HD; i += PF_THREADS) {
            const int j = i / HD, d = i % HD, t = k0 + j;
            if (t < kv_end) {
                const int64_t off = ((int64_t)table[t / block_size] * block_size + t % block_size) * slot_stride +
                                    (int64_t)kv_head * HD + d;
                ks[i] = key_cache[off];
                vs[i] = value_cache[off];
            } else {  // never read from the cache past the sequence: zeros keep 0 * v finite
                ks[i] = pf_from_f<T>(0.f);
                vs[i] = pf_from_f<T>(0.f);
            }
        }
        __syncthreads();
        if constexpr (TC) {
            scores_tc<T, HD, N>(s, qs, ks);
        } else {
            scores_simt<T, T, HD, N>(s, qs, ks);
        }
        __syncthreads();
        // Online softmax of row r over this tile's columns g, g + PF_GROUP, ...
        const int qpos = pos0 + r;
        const float m_old = row_max[r], l_old = row_sum[r];
        float mx = -FLT_MAX;
        for (int j = g; j < N; j += PF_GROUP) {
            const int t = k0 + j;
            const float v = (r < nrows && t <= qpos) ? s[r * N + j] * scale : -FLT_MAX;
            s[r * N + j] = v;
            mx = fmaxf(mx, v);
        }
        for (int off = PF_GROUP / 2; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, off, PF_GROUP));
        const float m_new = fmaxf(m_old, mx);
        const float alpha = __expf(m_old - m_new);
        float sum = 0.f;
        for (int j = g; j < N; j += PF_GROUP) {
            const float v = s[r * N + j];
            const float e = v == -FLT_MAX ? 0.f : __expf(v - m_new);
            p[r * N + j] = pf_from_f<T>(e);
            sum += e;
        }
        for (int off = PF_GROUP / 2; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffff, sum, off, PF_GROUP);
        for (int d = g; d < HD; d += PF_GROUP) o[r * HD + d] *= alpha;
        __syncwarp();  // every lane of row r has read row_max[r] / row_sum[r]
        if (g == 0) {
            row_max[r] = m_new;
            row_sum[r] = l_old * alpha + sum;
        }
        __syncthreads();
        if constexpr (TC) {
            pv_tc<T, HD, N>(o, p, vs);
        } else {
            pv_simt<T, T, HD, N>(o, p, vs);
        }
    }
    __syncthreads();
    for (int i = tid; i < nrows * HD; i += PF_THREADS) {
        const int rr = i / HD, d = i % HD;
        out[((int64_t)(row0 + rr) * num_heads + head) * HD + d] = pf_from_f<T>(o[i] / row_sum[rr]);
    }
}

#define PAGED_PREFILL(SUFFIX, T, HD, N, TC)                                                                              \
    extern "C" __global__ void __launch_bounds__(PF_THREADS) paged_prefill_##SUFFIX##_hd##HD(                            \
        T* out, const T* q, const T* key_cache, const T* value_cache, const int* block_tables, const int* tiles,         \
        int num_kv_heads, int block_size, int max_blocks_per_seq, float scale) {                                        \
        prefill<T, HD, N, TC>(out, q, key_cache, value_cache, block_tables, tiles, num_kv_heads, block_size,             \
                              max_blocks_per_seq, scale);                                                               \
    }

PAGED_PREFILL(bf16, __nv_bfloat16, 64, 32, true)
PAGED_PREFILL(bf16, __nv_bfloat16, 128, 32, true)
PAGED_PREFILL(f16, __half, 64, 32, true)
PAGED_PREFILL(f16, __half, 128, 32, true)
PAGED_PREFILL(f32, float, 64, 16, false)
PAGED_PREFILL(f32, float, 128, 16, false)
