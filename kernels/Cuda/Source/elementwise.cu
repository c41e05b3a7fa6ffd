// Elementwise ops, activations, optimiser and reductions (grid-stride loops over flat buffers).
#include "common.cuh"

#define GRID_STRIDE(i, n) for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += blockDim.x * gridDim.x)

extern "C" __global__ void fbd_fill(float* x, float value, int n)
{
    GRID_STRIDE(i, n) x[i] = value;
}

// dst[r*dstStride + c] = src[r*srcStride + c]; grid.y walks rows
extern "C" __global__ void fbd_copy_rows(float* dst, int dstStride, const float* src, int srcStride, int rows, int cols)
{
    for (int r = blockIdx.y; r < rows; r += gridDim.y)
        for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += blockDim.x * gridDim.x)
            dst[(long long)r * dstStride + c] = src[(long long)r * srcStride + c];
}

extern "C" __global__ void fbd_axpy(float* y, float alpha, const float* x, int n)
{
    GRID_STRIDE(i, n) y[i] = fmaf(x[i], alpha, y[i]);
}

extern "C" __global__ void fbd_scale_shift(float* x, float alpha, float beta, int n)
{
    GRID_STRIDE(i, n) x[i] = x[i] * alpha + beta;
}

extern "C" __global__ void fbd_mul(float* dst, const float* a, const float* b, int accumulate, int n)
{
    if (accumulate) { GRID_STRIDE(i, n) dst[i] = fmaf(a[i], b[i], dst[i]); }
    else { GRID_STRIDE(i, n) dst[i] = a[i] * b[i]; }
}

#define GELU_C 0.7978845608028654f
#define GELU_A 0.044715f

extern "C" __global__ void fbd_gelu_fwd(const float* x, float* y, int n)
{
    GRID_STRIDE(i, n)
    {
        float v = x[i];
        y[i] = 0.5f * v * (1.f + tanhf(GELU_C * (v + GELU_A * v * v * v)));
    }
}

extern "C" __global__ void fbd_gelu_bwd(const float* x, const float* dy, float* dx, int n)
{
    GRID_STRIDE(i, n)
    {
        float v = x[i];
        float t = tanhf(GELU_C * (v + GELU_A * v * v * v));
        float d = 0.5f * (1.f + t) + 0.5f * v * (1.f - t * t) * GELU_C * (1.f + 3.f * GELU_A * v * v);
        dx[i] = dy[i] * d;
    }
}

extern "C" __global__ void fbd_silu_fwd(const float* x, float* y, int n)
{
    GRID_STRIDE(i, n) { float v = x[i]; y[i] = v / (1.f + expf(-v)); }
}

extern "C" __global__ void fbd_silu_bwd(const float* x, const float* dy, float* dx, int n)
{
    GRID_STRIDE(i, n)
    {
        float v = x[i], s = 1.f / (1.f + expf(-v));
        dx[i] = dy[i] * s * (1.f + v * (1.f - s));
    }
}

// Fused AdamW (PyTorch order: decoupled decay, then the bias-corrected step). bc1/sqrtBc2 come from the host.
extern "C" __global__ void fbd_adamw(float* param, const float* grad, float* m, float* v, float beta1, float beta2, float eps,
    float decay, float stepSize, float sqrtBc2, float gradScale, int n)
{
    GRID_STRIDE(i, n)
    {
        float g = grad[i] * gradScale;
        float mi = beta1 * m[i] + (1.f - beta1) * g;
        float vi = beta2 * v[i] + (1.f - beta2) * g * g;
        m[i] = mi; v[i] = vi;
        param[i] = param[i] * decay - stepSize * mi / (sqrtf(vi) / sqrtBc2 + eps);
    }
}

// AdamW for the device-resident step and the bf16 mode, one pass over the flat parameter buffer:
// - clipping without the host: with sumSquares (the gradient's Σg² as a double, written on the device by
//   fbd_sum_partials) and maxNorm > 0 the gradient is scaled by min(1, maxNorm/‖g‖) here; a non-finite norm leaves
//   every parameter, moment and EMA value untouched (the host sees the norm at its next read-back and stops);
// - ema (may be null): ema = emaDecay·ema + (1-emaDecay)·param of the updated weights, in the same pass;
// - param16 (may be null): the persistent bf16 copy of the updated weights that bf16 GEMMs read, written here so that
//   no GEMM converts weights again.
extern "C" __global__ void fbd_adamw_dev(float* param, u16* param16, const float* grad, float* m, float* v, float beta1, float beta2,
    float eps, float decay, float stepSize, float sqrtBc2, float gradScale, const double* sumSquares, float maxNorm,
    float* ema, float emaDecay, int n)
{
    float scale = gradScale;
    if (sumSquares)
    {
        double norm = sqrt(sumSquares[0]);
        if (!(norm <= 1e300)) return;   // NaN or inf
        if (maxNorm > 0.f && norm > (double)maxNorm) scale *= (float)((double)maxNorm / norm);
    }
    float emaRest = 1.f - emaDecay;
    GRID_STRIDE(i, n)
    {
        float g = grad[i] * scale;
        float mi = beta1 * m[i] + (1.f - beta1) * g;
        float vi = beta2 * v[i] + (1.f - beta2) * g * g;
        m[i] = mi; v[i] = vi;
        float p = param[i] * decay - stepSize * mi / (sqrtf(vi) / sqrtBc2 + eps);
        param[i] = p;
        if (param16) param16[i] = f32_to_bf16(p);
        if (ema) ema[i] = emaDecay * ema[i] + emaRest * p;
    }
}

// out[0] = Σ partials[0..count) in one block (the second pass of fbd_reduce_sum, kept on the device): summed and
// stored in double (the trainer reads its loss and Σg² back every few steps, with every bit the CPU has).
extern "C" __global__ void fbd_sum_partials(const double* partials, int count, double* out)
{
    __shared__ double scratch[32];
    double acc = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
    acc = block_sum_d(acc, scratch);
    if (threadIdx.x == 0) out[0] = acc;
}

extern "C" __global__ void fbd_ema(float* ema, const float* param, float decay, int n)
{
    GRID_STRIDE(i, n) ema[i] = decay * ema[i] + (1.f - decay) * param[i];
}

// Sum (squares=0) or sum of squares (squares=1) in double: one partial per block, summed on the host.
extern "C" __global__ void fbd_reduce_sum(const float* x, int n, int squares, double* partials)
{
    __shared__ double scratch[32];
    double acc = 0.0;
    GRID_STRIDE(i, n) { double v = x[i]; acc += squares ? v * v : v; }
    acc = block_sum_d(acc, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// dst[c] += sum over a chunk of rows of src[r, c]; block (32, 8), grid (ceil(cols/32), rowChunks).
// dst is zeroed by the host first when not accumulating.
extern "C" __global__ void fbd_column_sum(float* dst, const float* src, int rows, int cols, int rowsPerChunk)
{
    __shared__ float part[8][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    int r0 = blockIdx.y * rowsPerChunk, r1 = min(rows, r0 + rowsPerChunk);
    float acc = 0.f;
    if (c < cols)
        for (int r = r0 + threadIdx.y; r < r1; r += 8) acc += src[(long long)r * cols + c];
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols)
    {
        float s = 0.f;
        for (int k = 0; k < 8; k++) s += part[k][threadIdx.x];
        atomicAdd(dst + c, s);
    }
}

// Row-broadcast bias add: c[r*ldc + j] += bias[j] (batched GEMM epilogue when cuBLASLt's cannot be used).
extern "C" __global__ void fbd_add_bias_rows(float* c, int ldc, const float* bias, int rows, int cols, long long batchStride, int batch)
{
    for (int p = blockIdx.z; p < batch; p += gridDim.z)
        for (int r = blockIdx.y; r < rows; r += gridDim.y)
            for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < cols; j += blockDim.x * gridDim.x)
                c[p * batchStride + (long long)r * ldc + j] += bias[j];
}

// fp32 -> bf16 copy (bf16 GEMM/attention inputs)
extern "C" __global__ void fbd_to_bf16(const float* x, u16* y, int n)
{
    GRID_STRIDE(i, n) y[i] = f32_to_bf16(x[i]);
}

extern "C" __global__ void fbd_from_bf16(const u16* x, float* y, int n)
{
    GRID_STRIDE(i, n) y[i] = bf16_to_f32(x[i]);
}
