// Per-row sampling: temperature, nucleus (top-p) and an inverse-CDF categorical draw with supplied uniforms.
// Matches CpuBackend.SampleCategorical: with top-p < 1 the CDF runs over tokens in descending probability
// (ties by ascending id) and the nucleus is the longest such prefix whose cumulative mass is <= top-p, never
// empty (the top token is always kept), as bd3lms's _nucleus_sample; with top-p >= 1
// the CDF runs in id order over the full distribution. Instead of sorting the vocabulary, each "first element
// of the ordering at which the running mass crosses X" is found by bisection on the float bits of a threshold
// (F(s) = mass of tokens with p >= s is monotone), then the ties at the threshold are walked in id order.
// One block of SAMPLE_THREADS threads per row; p is kept in a [rows, vocab] scratch buffer.
#include "common.cuh"

#define SAMPLE_THREADS 256

struct SampleShared
{
    double dscratch[32];
    float fscratch[32];
    double prefix[SAMPLE_THREADS];
    int ipick;
    int icount[SAMPLE_THREADS];
};

// mass of tokens with p >= s (s > 0), in double
__device__ double mass_at_least(const float* p, int vocab, float s, SampleShared& sh)
{
    double acc = 0.0;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) { float v = p[j]; if (v >= s) acc += v; }
    return block_sum_d(acc, sh.dscratch);
}

// Largest positive float s in [lo, hi] (bit patterns) with cond(F(s)), where F is the mass of p >= s;
// strict: cond is F > X, else F >= X. Returns 0 when no s in the range satisfies it.
__device__ u32 bisect_threshold(const float* p, int vocab, double X, bool strict, u32 lo, u32 hi, SampleShared& sh)
{
    double f = mass_at_least(p, vocab, __uint_as_float(lo), sh);
    if (!(strict ? f > X : f >= X)) return 0;
    u32 good = lo, bad = hi + 1;     // cond(good) holds; cond(bad) fails (mass above the max is 0)
    while (bad - good > 1)
    {
        u32 mid = good + ((bad - good) >> 1);
        f = mass_at_least(p, vocab, __uint_as_float(mid), sh);
        if (strict ? f > X : f >= X) good = mid; else bad = mid;
    }
    return good;
}

// Number of tokens whose p equals v.
__device__ int count_equal(const float* p, int vocab, float v, SampleShared& sh)
{
    double c = 0.0;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) c += p[j] == v ? 1.0 : 0.0;
    return (int)block_sum_d(c, sh.dscratch);
}

// Index of the k-th (1-based) token, in id order, whose p equals v.
__device__ int kth_equal(const float* p, int vocab, float v, int k, SampleShared& sh)
{
    int t = threadIdx.x, nt = blockDim.x;
    int chunk = (vocab + nt - 1) / nt, j0 = min(vocab, t * chunk), j1 = min(vocab, j0 + chunk);
    int c = 0;
    for (int j = j0; j < j1; j++) c += p[j] == v;
    sh.icount[t] = c;
    if (t == 0) sh.ipick = -1;
    __syncthreads();
    if (t == 0) { int acc = 0; for (int i = 0; i < nt; i++) { int x = sh.icount[i]; sh.icount[i] = acc; acc += x; } }
    __syncthreads();
    int before = sh.icount[t];
    if (before < k && before + c >= k)
    {
        int seen = before;
        for (int j = j0; j < j1; j++) if (p[j] == v && ++seen == k) { sh.ipick = j; break; }
    }
    __syncthreads();
    return sh.ipick;
}

extern "C" __global__ void fbd_sample(const float* logits, int rows, int vocab, int maskId, float temperature, float topP,
    const float* uniforms, int* tokens, float* probs, float* scratch)
{
    __shared__ SampleShared sh;
    int r = blockIdx.x;
    if (r >= rows) return;
    const float* row = logits + (long long)r * vocab;
    float* p = scratch + (long long)r * vocab;
    int t = threadIdx.x, nt = blockDim.x;

    if (temperature <= 0.f)
    {
        // argmax, first index on ties (mask excluded)
        float best = FBD_NEG_INF; int bi = 0x7fffffff;
        for (int j = t; j < vocab; j += nt)
        {
            float v = j == maskId ? FBD_NEG_INF : row[j];
            if (v > best || (v == best && j < bi)) { best = v; bi = j; }
        }
        float mx = block_max(best, sh.fscratch);
        if (t == 0) sh.ipick = 0x7fffffff;
        __syncthreads();
        if (best == mx) atomicMin(&sh.ipick, bi);
        __syncthreads();
        if (t == 0) { tokens[r] = sh.ipick == 0x7fffffff ? 0 : sh.ipick; probs[r] = 1.f; }
        return;
    }

    float invT = 1.f / temperature;
    float mx = FBD_NEG_INF;
    for (int j = t; j < vocab; j += nt) if (j != maskId) mx = fmaxf(mx, row[j] * invT);
    mx = block_max(mx, sh.fscratch);
    // the normaliser in double: with a 50K vocabulary a float sum is off by ~1e-5, enough to move the nucleus edge
    double s = 0.0;
    for (int j = t; j < vocab; j += nt) if (j != maskId) s += (double)expf(row[j] * invT - mx);
    s = block_sum_d(s, sh.dscratch);
    float pmax = 0.f;
    for (int j = t; j < vocab; j += nt)
    {
        float v = j == maskId ? 0.f : (float)((double)expf(row[j] * invT - mx) / s);
        p[j] = v;
        pmax = fmaxf(pmax, v);
    }
    pmax = block_max(pmax, sh.fscratch);
    __syncthreads();
    double u = uniforms[r];

    if (topP >= 1.f)
    {
        // CDF in id order over the whole distribution; total is 1 as in the reference
        double target = u;
        int chunk = (vocab + nt - 1) / nt, j0 = min(vocab, t * chunk), j1 = min(vocab, j0 + chunk);
        double cs = 0.0; int lastPos = -1;
        for (int j = j0; j < j1; j++) if (p[j] > 0.f) { cs += p[j]; lastPos = j; }
        sh.prefix[t] = cs;
        if (t == 0) sh.ipick = 0x7fffffff;
        __syncthreads();
        if (t == 0) { double acc = 0.0; for (int i = 0; i < nt; i++) { double x = sh.prefix[i]; sh.prefix[i] = acc; acc += x; } }
        __syncthreads();
        double acc = sh.prefix[t];
        for (int j = j0; j < j1; j++)
        {
            if (p[j] <= 0.f) continue;
            acc += p[j];
            if (target < acc) { atomicMin(&sh.ipick, j); break; }
        }
        __syncthreads();
        int pick = sh.ipick;
        if (pick == 0x7fffffff)
        {
            // rounding left the running mass below the target: the last positive entry stands
            __syncthreads();
            if (t == 0) sh.ipick = -1;
            __syncthreads();
            atomicMax(&sh.ipick, lastPos);
            __syncthreads();
            pick = sh.ipick;
        }
        if (t == 0) { tokens[r] = pick; probs[r] = pick >= 0 ? p[pick] : 0.f; }
        return;
    }

    u32 hiBits = __float_as_uint(pmax);
    // nucleus (as bd3lms): the sorted prefix whose cumulative mass stays <= topP, the top token always kept. The
    // first element whose running mass exceeds topP (the crossing element) is the first one left out.
    u32 nb = bisect_threshold(p, vocab, (double)topP, true, 1u, hiBits, sh);
    float sigN; double aboveN; int kN;
    if (nb == 0)
    {
        // float rounding keeps the whole mass at or below topP: every positive token is in the nucleus
        nb = 1u; sigN = __uint_as_float(nb);
        aboveN = mass_at_least(p, vocab, __uint_as_float(2u), sh);
        kN = count_equal(p, vocab, sigN, sh);
    }
    else
    {
        sigN = __uint_as_float(nb);
        aboveN = nb < hiBits ? mass_at_least(p, vocab, __uint_as_float(nb + 1u), sh) : 0.0;
        int cC = count_equal(p, vocab, sigN, sh);
        int kC = 1;   // the crossing element is the kC-th tie at sigN, in id order
        while (kC < cC && aboveN + kC * (double)sigN <= (double)topP) kC++;
        kN = kC - 1;
        if (aboveN == 0.0 && kN == 0) kN = 1;   // the crossing element is the top token: it stays
    }
    double total = aboveN + kN * (double)sigN;
    double target = u * total;
    // pick: first element at which the running mass exceeds target; above the nucleus threshold first
    u32 pb = nb < hiBits ? bisect_threshold(p, vocab, target, true, nb + 1u, hiBits, sh) : 0u;
    float sigP = sigN; double aboveP = aboveN; int kmax = kN;
    if (pb == 0 && kN == 0)
    {
        // rounding put the target past the values above sigN and no tie of sigN is in the nucleus: the nucleus's
        // last element stands (the smallest value above sigN, its last tie in id order)
        pb = bisect_threshold(p, vocab, aboveN, false, nb + 1u, hiBits, sh);
        target = aboveN;
    }
    if (pb != 0)
    {
        sigP = __uint_as_float(pb);
        aboveP = pb < hiBits ? mass_at_least(p, vocab, __uint_as_float(pb + 1u), sh) : 0.0;
        kmax = count_equal(p, vocab, sigP, sh);
    }
    int kP = 1;
    while (kP < kmax && aboveP + kP * (double)sigP <= target) kP++;
    int pick = kmax > 0 ? kth_equal(p, vocab, sigP, kP, sh) : -1;
    if (t == 0) { tokens[r] = pick; probs[r] = pick >= 0 ? (float)(p[pick] / total) : 0.f; }
}

// dst[dstIndex[k]] = src[srcIndex[k]]: sampled tokens written into the block's ids, which stay on the device between steps
extern "C" __global__ void fbd_scatter_tokens(int* dst, const int* dstIndex, const int* src, const int* srcIndex, int n)
{
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < n; k += blockDim.x * gridDim.x) dst[dstIndex[k]] = src[srcIndex[k]];
}
