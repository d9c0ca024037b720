// Host launchers of kernels/cuda/paged_prefill.cu under the SIMT shim.
#include "../../cuda/paged_prefill.cu"

#define LAUNCH(SUFFIX, HD, T, ST)                                                                                       \
    extern "C" void simt_paged_prefill_##SUFFIX##_hd##HD(ST* out, const ST* q, const ST* key_cache,                     \
                                                          const ST* value_cache, const int* block_tables,               \
                                                          const int* tiles, int num_tiles, int num_heads,               \
                                                          int num_kv_heads, int block_size, int max_blocks_per_seq,     \
                                                          float scale) {                                                \
        simt::launch(dim3(num_tiles, num_heads), dim3(PF_THREADS), [&] {                                                \
            paged_prefill_##SUFFIX##_hd##HD((T*)out, (const T*)q, (const T*)key_cache, (const T*)value_cache,           \
                                            block_tables, tiles, num_kv_heads, block_size, max_blocks_per_seq, scale);  \
        });                                                                                                             \
    }
LAUNCH(f32, 64, float, float)
LAUNCH(f32, 128, float, float)
LAUNCH(f16, 64, __half, uint16_t)
LAUNCH(f16, 128, __half, uint16_t)
LAUNCH(bf16, 64, __nv_bfloat16, uint16_t)
LAUNCH(bf16, 128, __nv_bfloat16, uint16_t)

extern "C" int simt_paged_prefill_tile_rows() { return PF_M; }
