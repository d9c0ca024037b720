// Host launchers of kernels/cuda/reshape_and_cache.cu under the SIMT shim (see include/simt.h).
#include "../../cuda/reshape_and_cache.cu"

#define LAUNCH(NAME, T, ST)                                                                                 \
    extern "C" void simt_##NAME(const ST* key, const ST* value, ST* key_cache, ST* value_cache,            \
                                const int64_t* slot_mapping, int width, int num_tokens, int threads) {     \
        simt::launch(dim3(num_tokens), dim3(threads), [&] {                                                \
            NAME((const T*)key, (const T*)value, (T*)key_cache, (T*)value_cache, slot_mapping, width);     \
        });                                                                                                \
    }
LAUNCH(reshape_and_cache_f32, float, float)
LAUNCH(reshape_and_cache_f16, __half, uint16_t)
LAUNCH(reshape_and_cache_bf16, __nv_bfloat16, uint16_t)
