// Paged attention for decode: one query token per sequence, any number of sequences, GQA, block
// tables, variable context lengths; the context is split into partitions of PARTITION tokens
// processed by separate thread blocks (flash-decoding), combined by a second kernel with
// log-sum-exp rescaling.
// CPU twin and reference: hhh_kernels::cpu::paged_attention (kernels/src/cpu.rs); the partition
// combination is hhh_kernels::reference::attention_split (kernels/src/reference.rs).
//
// q, out:        [num_rows, num_heads, head_dim]                     (q with RoPE applied)
// seq_rows:      [num_seqs] int32, the row of q/out of each sequence's query (a decode step's
//                rows need not be the first or contiguous ones: prefill rows of the same step are
//                written by paged_prefill.cu into the same output)
// key/value_cache: [num_blocks, block_size, num_kv_heads, head_dim]   (kernels/src/paged.rs)
// block_tables:  [num_seqs, max_blocks_per_seq] int32
// context_lens:  [num_seqs] int32 (the query's own position included; >= 1)
// Pass 1 (paged_attention_partial_*): grid (num_heads, num_seqs, max_partitions), block THREADS.
//   Writes, per (seq, head, partition): max_logits, exp_sums, and tmp_out[head_dim] =
//   sum_j exp(s_j - max) v_j / exp_sum over the partition's positions. Partitions past a
//   sequence's context write max = -inf, sum = 0.
// Pass 2 (paged_attention_combine_*): grid (num_heads, num_seqs), block THREADS.
//   out = sum_p tmp_out_p * exp_sum_p * exp(max_p - M) / sum_p exp_sum_p * exp(max_p - M).
// Accumulation in f32 for every storage type. head_dim <= MAX_HEAD_DIM.
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <float.h>
#include <stdint.h>

#define THREADS 128
#define PARTITION 512
#define MAX_HEAD_DIM 256

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ void from_f(float* p, float x) { *p = x; }
__device__ __forceinline__ void from_f(__half* p, float x) { *p = __float2half(x); }
__device__ __forceinline__ void from_f(__nv_bfloat16* p, float x) { *p = __float2bfloat16(x); }

// Block-wide reduction of one float (max or sum) through shared memory.
template <bool MAX>
__device__ float block_reduce(float x, float* scratch) {
    for (int o = 16; o > 0; o >>= 1) {
        float y = __shfl_xor_sync(0xffffffff, x, o);
        x = MAX ? fmaxf(x, y) : x + y;
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) scratch[warp] = x;
    __syncthreads();
    x = lane < THREADS / 32 ? scratch[lane] : (MAX ? -FLT_MAX : 0.f);
    for (int o = 16; o > 0; o >>= 1) {
        float y = __shfl_xor_sync(0xffffffff, x, o);
        x = MAX ? fmaxf(x, y) : x + y;
    }
    __syncthreads();
    return x;
}

template <typename T>
__device__ void partial(float* __restrict__ max_logits, float* __restrict__ exp_sums, float* __restrict__ tmp_out,
                        const T* __restrict__ q, const T* __restrict__ key_cache, const T* __restrict__ value_cache,
                        const int* __restrict__ block_tables, const int* __restrict__ context_lens,
                        const int* __restrict__ seq_rows, int num_kv_heads, int head_dim, int block_size,
                        int max_blocks_per_seq, float scale) {
    const int head = blockIdx.x, seq = blockIdx.y, part = blockIdx.z;
    const int num_heads = gridDim.x, num_parts = gridDim.z;
    const int kv_head = head / (num_heads / num_kv_heads);
    const int ctx = context_lens[seq];
    const int start = part * PARTITION;
    const int end = min(start + PARTITION, ctx);
    const int64_t stat = ((int64_t)seq * num_heads + head) * num_parts + part;
    float* out = tmp_out + stat * head_dim;
    if (start >= ctx) {
        if (threadIdx.x == 0) {
            max_logits[stat] = -FLT_MAX;
            exp_sums[stat] = 0.f;
        }
        for (int d = threadIdx.x; d < head_dim; d += THREADS) out[d] = 0.f;
        return;
    }
    __shared__ float qs[MAX_HEAD_DIM];
    __shared__ float logits[PARTITION];
    __shared__ float scratch[THREADS / 32];
    const T* qh = q + ((int64_t)seq_rows[seq] * num_heads + head) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += THREADS) qs[d] = to_f(qh[d]);
    __syncthreads();
    const int* table = block_tables + (int64_t)seq * max_blocks_per_seq;
    const int64_t slot_stride = (int64_t)num_kv_heads * head_dim;
    // Scores: one thread per position.
    float local_max = -FLT_MAX;
    for (int t = start + threadIdx.x; t < end; t += THREADS) {
        const int64_t slot = (int64_t)table[t / block_size] * block_size + t % block_size;
        const T* k = key_cache + slot * slot_stride + (int64_t)kv_head * head_dim;
        float s = 0.f;
        for (int d = 0; d < head_dim; ++d) s = fmaf(qs[d], to_f(k[d]), s);
        s *= scale;
        logits[t - start] = s;
        local_max = fmaxf(local_max, s);
    }
    const float m = block_reduce<true>(local_max, scratch);
    float local_sum = 0.f;
    for (int t = start + threadIdx.x; t < end; t += THREADS) {
        const float e = __expf(logits[t - start] - m);
        logits[t - start] = e;
        local_sum += e;
    }
    const float sum = block_reduce<false>(local_sum, scratch);  // synchronises: logits are final
    // Values: one thread per output dimension, all positions of the partition.
    for (int d = threadIdx.x; d < head_dim; d += THREADS) {
        float acc = 0.f;
        for (int t = start; t < end; ++t) {
            const int64_t slot = (int64_t)table[t / block_size] * block_size + t % block_size;
            acc = fmaf(logits[t - start], to_f(value_cache[slot * slot_stride + (int64_t)kv_head * head_dim + d]), acc);
        }
        out[d] = acc / sum;
    }
    if (threadIdx.x == 0) {
        max_logits[stat] = m;
        exp_sums[stat] = sum;
    }
}

template <typename T>
__device__ void combine(T* __restrict__ out, const float* __restrict__ max_logits, const float* __restrict__ exp_sums,
                        const float* __restrict__ tmp_out, const int* __restrict__ seq_rows, int head_dim,
                        int num_parts) {
    const int head = blockIdx.x, seq = blockIdx.y, num_heads = gridDim.x;
    const int64_t base = ((int64_t)seq * num_heads + head) * num_parts;
    float gm = -FLT_MAX;
    for (int p = 0; p < num_parts; ++p) gm = fmaxf(gm, max_logits[base + p]);
    float z = 0.f;
    for (int p = 0; p < num_parts; ++p) z += exp_sums[base + p] * __expf(max_logits[base + p] - gm);
    for (int d = threadIdx.x; d < head_dim; d += THREADS) {
        float acc = 0.f;
        for (int p = 0; p < num_parts; ++p) {
            acc += tmp_out[(base + p) * head_dim + d] * exp_sums[base + p] * __expf(max_logits[base + p] - gm);
        }
        from_f(out + ((int64_t)seq_rows[seq] * num_heads + head) * head_dim + d, acc / z);
    }
}

#define PAGED_ATTENTION(SUFFIX, T)                                                                                        \
    extern "C" __global__ void __launch_bounds__(THREADS) paged_attention_partial_##SUFFIX(                               \
        float* max_logits, float* exp_sums, float* tmp_out, const T* q, const T* key_cache, const T* value_cache,         \
        const int* block_tables, const int* context_lens, const int* seq_rows, int num_kv_heads, int head_dim,             \
        int block_size, int max_blocks_per_seq, float scale) {                                                             \
        partial<T>(max_logits, exp_sums, tmp_out, q, key_cache, value_cache, block_tables, context_lens, seq_rows,        \
                   num_kv_heads, head_dim, block_size, max_blocks_per_seq, scale);                                        \
    }                                                                                                                      \
    extern "C" __global__ void __launch_bounds__(THREADS) paged_attention_combine_##SUFFIX(                               \
        T* out, const float* max_logits, const float* exp_sums, const float* tmp_out, const int* seq_rows, int head_dim,  \
        int num_parts) {                                                                                                   \
        combine<T>(out, max_logits, exp_sums, tmp_out, seq_rows, head_dim, num_parts);                                    \
    }

PAGED_ATTENTION(f32, float)
PAGED_ATTENTION(f16, __half)
PAGED_ATTENTION(bf16, __nv_bfloat16)
