// Write new keys and values into the paged KV cache (vLLM's reshape_and_cache).
// CPU twin and reference: hhh_kernels::cpu::write_kv (kernels/src/cpu.rs).
//
// key, value:          [num_tokens, width]  (width = num_kv_heads * head_dim), row-major
// key_cache, value_cache: [num_blocks * block_size, width] (the layout of kernels/src/paged.rs)
// slot_mapping:        [num_tokens], the cache slot of each token
//                      (block_table[pos / block_size] * block_size + pos % block_size), or -1
//                      to skip a token (padding)
// Launch: grid = num_tokens, block = min(width, 512) threads.
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>

template <typename T>
__device__ __forceinline__ void reshape_and_cache(const T* __restrict__ key, const T* __restrict__ value, T* __restrict__ key_cache,
                                                  T* __restrict__ value_cache, const int64_t* __restrict__ slot_mapping, int width) {
    const int64_t token = blockIdx.x;
    const int64_t slot = slot_mapping[token];
    if (slot < 0) {
        return;
    }
    const T* k = key + token * width;
    const T* v = value + token * width;
    T* kc = key_cache + slot * width;
    T* vc = value_cache + slot * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        kc[i] = k[i];
        vc[i] = v[i];
    }
}

#define RESHAPE_AND_CACHE(NAME, T)                                                                                     \
    extern "C" __global__ void NAME(const T* key, const T* value, T* key_cache, T* value_cache, const int64_t* slot_mapping, \
                                    int width) {                                                                        \
        reshape_and_cache<T>(key, value, key_cache, value_cache, slot_mapping, width);                                 \
    }

RESHAPE_AND_CACHE(reshape_and_cache_f32, float)
RESHAPE_AND_CACHE(reshape_and_cache_f16, __half)
RESHAPE_AND_CACHE(reshape_and_cache_bf16, __nv_bfloat16)
