// LayerNorm forward/backward (one block per row), rotary, embedding, gated residual with dropout.
#include "common.cuh"

// y = (x-mean)*rstd*w (+b); two-pass in fp32 like the CPU reference. block per row.
// y16 (may be null): the same output rounded to bf16, written in the same pass for the bf16 GEMM that reads y next
// (statistics and y stay fp32).
extern "C" __global__ void fbd_layernorm_fwd(const float* x, const float* w, const float* b, float* y, u16* y16, float* mean, float* rstd,
    int rows, int dim, float eps)
{
    __shared__ float scratch[32];
    int r = blockIdx.x;
    if (r >= rows) return;
    const float* xr = x + (long long)r * dim;
    float* yr = y + (long long)r * dim;
    float s = 0.f;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) s += xr[c];
    float mu = block_sum(s, scratch) / dim;
    float q = 0.f;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) { float d = xr[c] - mu; q += d * d; }
    float var = block_sum(q, scratch) / dim;
    float rs = 1.f / sqrtf(var + eps);
    if (threadIdx.x == 0) { mean[r] = mu; rstd[r] = rs; }
    for (int c = threadIdx.x; c < dim; c += blockDim.x)
    {
        float v = (xr[c] - mu) * rs * w[c];
        v = b ? v + b[c] : v;
        yr[c] = v;
        if (y16) y16[(long long)r * dim + c] = f32_to_bf16(v);
    }
}

// dx += rstd*(g - mean(g) - xhat*mean(g*xhat)), g = dy*w. block per row.
extern "C" __global__ void fbd_layernorm_bwd_dx(const float* dy, const float* x, const float* w, const float* mean, const float* rstd,
    float* dx, int rows, int dim)
{
    __shared__ float scratch[32];
    int r = blockIdx.x;
    if (r >= rows) return;
    const float* dyr = dy + (long long)r * dim;
    const float* xr = x + (long long)r * dim;
    float* dxr = dx + (long long)r * dim;
    float mu = mean[r], rs = rstd[r];
    float sg = 0.f, sgx = 0.f;
    for (int c = threadIdx.x; c < dim; c += blockDim.x)
    {
        float g = dyr[c] * w[c], xh = (xr[c] - mu) * rs;
        sg += g; sgx += g * xh;
    }
    float meanG = block_sum(sg, scratch) / dim;
    float meanGX = block_sum(sgx, scratch) / dim;
    for (int c = threadIdx.x; c < dim; c += blockDim.x)
    {
        float g = dyr[c] * w[c], xh = (xr[c] - mu) * rs;
        dxr[c] += rs * (g - meanG - xh * meanGX);
    }
}

// dW[c] += sum_r dy*xhat, dB[c] += sum_r dy over a chunk of rows. block (32, 8), grid (ceil(dim/32), chunks).
extern "C" __global__ void fbd_layernorm_bwd_dw(const float* dy, const float* x, const float* mean, const float* rstd,
    float* dw, float* db, int rows, int dim, int rowsPerChunk)
{
    __shared__ float pw[8][33], pb[8][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    int r0 = blockIdx.y * rowsPerChunk, r1 = min(rows, r0 + rowsPerChunk);
    float aw = 0.f, ab = 0.f;
    if (c < dim)
        for (int r = r0 + threadIdx.y; r < r1; r += 8)
        {
            float g = dy[(long long)r * dim + c];
            aw += g * (x[(long long)r * dim + c] - mean[r]) * rstd[r];
            ab += g;
        }
    pw[threadIdx.y][threadIdx.x] = aw; pb[threadIdx.y][threadIdx.x] = ab;
    __syncthreads();
    if (threadIdx.y == 0 && c < dim)
    {
        float sw = 0.f, sb = 0.f;
        for (int k = 0; k < 8; k++) { sw += pw[k][threadIdx.x]; sb += pb[k][threadIdx.x]; }
        atomicAdd(dw + c, sw);
        if (db) atomicAdd(db + c, sb);
    }
}

// In-place half-split rotary on rows of [heads, headDim] at x[r*rowStride]; grid.x = rows, threads over heads*half.
extern "C" __global__ void fbd_rotary(float* x, int rows, int rowStride, int heads, int headDim, const int* positions,
    const float* cosT, const float* sinT, float sign)
{
    int half = headDim >> 1;
    for (int r = blockIdx.x; r < rows; r += gridDim.x)
    {
        int pos = positions[r];
        const float* cr = cosT + (long long)pos * half;
        const float* sr = sinT + (long long)pos * half;
        for (int t = threadIdx.x; t < heads * half; t += blockDim.x)
        {
            int h = t / half, i = t - h * half;
            float* b = x + (long long)r * rowStride + h * headDim;
            float c = cr[i], s = sign * sr[i];
            float x1 = b[i], x2 = b[half + i];
            b[i] = x1 * c - x2 * s;
            b[half + i] = x2 * c + x1 * s;
        }
    }
}

// out[r] = table[ids[r]]; ids outside [0, tableRows) set *bad (checked on the host) and write zeros.
extern "C" __global__ void fbd_embedding_fwd(const int* ids, const float* table, float* out, int rows, int dim, int tableRows, int* bad)
{
    for (int r = blockIdx.x; r < rows; r += gridDim.x)
    {
        int id = ids[r];
        bool ok = id >= 0 && id < tableRows;
        if (!ok && threadIdx.x == 0) atomicExch(bad, id == 0 ? -1 : id);
        for (int c = threadIdx.x; c < dim; c += blockDim.x)
            out[(long long)r * dim + c] = ok ? table[(long long)id * dim + c] : 0.f;
    }
}

extern "C" __global__ void fbd_embedding_bwd(const int* ids, const float* dOut, float* dTable, int rows, int dim, int tableRows)
{
    for (int r = blockIdx.x; r < rows; r += gridDim.x)
    {
        int id = ids[r];
        if (id < 0 || id >= tableRows) continue;
        for (int c = threadIdx.x; c < dim; c += blockDim.x)
            atomicAdd(dTable + (long long)id * dim + c, dOut[(long long)r * dim + c]);
    }
}

// x[r,c] += gate[c]*keepScale*y[r,c] where kept (flat index r*dim+c, as Dropout.Keep on the CPU)
extern "C" __global__ void fbd_residual_gated_fwd(float* x, const float* y, const float* gate, int rows, int dim, float dropP,
    float keepScale, u64 seed)
{
    int n = rows * dim;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x)
    {
        if (fbd_keep(seed, (u64)i, dropP))
        {
            int c = i % dim;
            x[i] += gate[c] * keepScale * y[i];
        }
    }
}

// dy = dx*gate*k (overwrites), dGate[c] += sum_r dx*k*y over a chunk of rows; block (32, 8), grid (ceil(dim/32), chunks)
extern "C" __global__ void fbd_residual_gated_bwd(const float* dx, const float* y, const float* gate, float* dy, float* dGate,
    int rows, int dim, float dropP, float keepScale, u64 seed, int rowsPerChunk)
{
    __shared__ float part[8][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    int r0 = blockIdx.y * rowsPerChunk, r1 = min(rows, r0 + rowsPerChunk);
    float acc = 0.f;
    if (c < dim)
    {
        float gc = gate[c];
        for (int r = r0 + threadIdx.y; r < r1; r += 8)
        {
            int i = r * dim + c;
            float k = fbd_keep(seed, (u64)i, dropP) ? keepScale : 0.f;
            float g = dx[i];
            acc += g * k * y[i];
            dy[i] = g * gc * k;
        }
    }
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < dim)
    {
        float s = 0.f;
        for (int k = 0; k < 8; k++) s += part[k][threadIdx.x];
        atomicAdd(dGate + c, s);
    }
}
