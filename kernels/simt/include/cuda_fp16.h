// Stand-in for CUDA's cuda_fp16.h on the host (SIMT shim): IEEE binary16, round to nearest even.
#pragma once
#include "simt.h"

struct __half {
    uint16_t bits;
};

inline float __half2float(__half h) {
    const uint32_t sign = (uint32_t)(h.bits & 0x8000u) << 16;
    const uint32_t exp = (h.bits >> 10) & 0x1f, man = h.bits & 0x3ffu;
    uint32_t f;
    if (exp == 0) {
        if (man == 0) {
            f = sign;
        } else {  // subnormal: renormalise
            int e = -1;
            uint32_t m = man;
            do {
                ++e;
                m <<= 1;
            } while ((m & 0x400u) == 0);
            f = sign | ((uint32_t)(127 - 15 - e) << 23) | ((m & 0x3ffu) << 13);
        }
    } else if (exp == 0x1f) {
        f = sign | 0x7f800000u | (man << 13);
    } else {
        f = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float out;
    std::memcpy(&out, &f, 4);
    return out;
}

inline __half __float2half(float x) {
    uint32_t f;
    std::memcpy(&f, &x, 4);
    const uint32_t sign = (f >> 16) & 0x8000u;
    const uint32_t absf = f & 0x7fffffffu;
    __half h;
    if (absf >= 0x7f800000u) {  // inf or nan
        h.bits = (uint16_t)(sign | 0x7c00u | (absf > 0x7f800000u ? 0x200u : 0));
        return h;
    }
    if (absf >= 0x477ff000u) {  // rounds to >= 65520: inf
        h.bits = (uint16_t)(sign | 0x7c00u);
        return h;
    }
    if (absf < 0x38800000u) {  // below the smallest normal half: subnormal or zero
        float a;
        std::memcpy(&a, &absf, 4);
        const float scaled = a * 16777216.0f;  // 2^24: units of the smallest subnormal
        const uint32_t q = (uint32_t)std::nearbyint(scaled);
        h.bits = (uint16_t)(sign | q);
        return h;
    }
    const uint32_t exp = ((absf >> 23) - 127 + 15) << 10;
    const uint32_t man = absf & 0x7fffffu;
    uint32_t hb = exp | (man >> 13);
    const uint32_t rest = man & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (hb & 1u))) ++hb;
    h.bits = (uint16_t)(sign | hb);
    return h;
}
