// Host launchers of kernels/cuda/paged_attention.cu (decode) under the SIMT shim.
#include "../../cuda/paged_attention.cu"

#define LAUNCH(SUFFIX, T, ST)                                                                                           \
    extern "C" void simt_paged_attention_##SUFFIX(ST* out, float* max_logits, float* exp_sums, float* tmp_out,          \
                                                  const ST* q, const ST* key_cache, const ST* value_cache,              \
                                                  const int* block_tables, const int* context_lens, const int* seq_rows, \
                                                  int num_seqs, int num_heads, int num_parts, int num_kv_heads,         \
                                                  int head_dim, int block_size, int max_blocks_per_seq, float scale) {  \
        simt::launch(dim3(num_heads, num_seqs, num_parts), dim3(THREADS), [&] {                                         \
            paged_attention_partial_##SUFFIX(max_logits, exp_sums, tmp_out, (const T*)q, (const T*)key_cache,           \
                                             (const T*)value_cache, block_tables, context_lens, seq_rows,               \
                                             num_kv_heads, head_dim, block_size, max_blocks_per_seq, scale);            \
        });                                                                                                             \
        simt::launch(dim3(num_heads, num_seqs), dim3(THREADS), [&] {                                                    \
            paged_attention_combine_##SUFFIX((T*)out, max_logits, exp_sums, tmp_out, seq_rows, head_dim, num_parts);    \
        });                                                                                                             \
    }
LAUNCH(f32, float, float)
LAUNCH(f16, __half, uint16_t)
LAUNCH(bf16, __nv_bfloat16, uint16_t)

extern "C" int simt_paged_attention_partition() { return PARTITION; }
