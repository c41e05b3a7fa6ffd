// The bf16 operands that attention_bf16.cu reads: q/k/v ([B, T, 3, H, hd], after rotary) and dO ([B, T, H*hd])
// rounded to nearest-even bf16 in the same layout, two elements per 32-bit store.
#include "common.cuh"

// y[i] = the pair (x[2i], x[2i+1]) as packed bf16; grid-stride over `pairs`
extern "C" __global__ void fbd_bf16_pairs(const float* x, u32* y, long long pairs)
{
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < pairs; i += stride)
        y[i] = pack_bf16x2(x[2 * i], x[2 * i + 1]);
}
