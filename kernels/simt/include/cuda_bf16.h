// Stand-in for CUDA's cuda_bf16.h on the host (SIMT shim): bfloat16, round to nearest even.
#pragma once
#include "simt.h"

struct __nv_bfloat16 {
    uint16_t bits;
};

inline float __bfloat162float(__nv_bfloat16 h) {
    const uint32_t f = (uint32_t)h.bits << 16;
    float out;
    std::memcpy(&out, &f, 4);
    return out;
}

inline __nv_bfloat16 __float2bfloat16(float x) {
    uint32_t f;
    std::memcpy(&f, &x, 4);
    __nv_bfloat16 h;
    if ((f & 0x7fffffffu) > 0x7f800000u) {
        h.bits = (uint16_t)((f >> 16) | 0x40u);  // quiet nan
        return h;
    }
    f += 0x7fffu + ((f >> 16) & 1u);
    h.bits = (uint16_t)(f >> 16);
    return h;
}
