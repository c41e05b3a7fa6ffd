// A fake libcublasLt for the CPU emulator: naive column-major matmul with transposes, strided batches, fp32/bf16
// inputs, fp32 output and the epilogues the backend uses: bias, GELU_AUX_BIAS (bias, then tanh GELU, the GELU input
// stored in the aux matrix), DGELU (× GELU'(aux)) and BGRADB (the sums of op(B) over k, one per column of D, written to
// the bias pointer). Like cuBLASLt, the heuristic finds no algorithm for another
// epilogue, or for an aux leading dimension that is not a multiple of 8; otherwise it answers one algorithm.
#include <cmath>
#include <dlfcn.h>
#include <cstdint>
#include <cstring>
#include <cstddef>
#define API extern "C" __attribute__((visibility("default")))
struct Desc { int transA = 0, transB = 0, epilogue = 1; const float* bias = nullptr; float* aux = nullptr; int64_t auxLd = 0; };
enum { EpiDefault = 1, EpiBias = 4, EpiGeluAuxBias = 164, EpiDGelu = 192, EpiBGradB = 512 };
static int g_fused_gelu = 0;
extern "C" __attribute__((visibility("default"))) int fake_fused_gelu_matmuls() { return g_fused_gelu; }
static double gelu(double x) { return 0.5 * x * (1 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }
static double gelu_grad(double x) {
    double t = std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x));
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * 0.7978845608028654 * (1 + 3 * 0.044715 * x * x);
}
struct Layout { int type; uint64_t rows, cols; int64_t ld; int batch = 1; int64_t stride = 0; };
struct Heur { uint64_t algo[8]; size_t ws; int state; float waves; int reserved[4]; };
API size_t cublasLtGetVersion() { return 120400; }
API int cublasLtCreate(void** h) { *h = new int(0); return 0; }
API int cublasLtDestroy(void* h) { delete (int*)h; return 0; }
API int cublasLtMatmulDescCreate(void** d, int, int) { *d = new Desc(); return 0; }
API int cublasLtMatmulDescDestroy(void* d) { delete (Desc*)d; return 0; }
API int cublasLtMatmulDescSetAttribute(void* d, int a, const void* buf, size_t) {
    Desc* x = (Desc*)d;
    if (a == 3) x->transA = *(const int*)buf; else if (a == 4) x->transB = *(const int*)buf;
    else if (a == 7) x->epilogue = *(const int*)buf; else if (a == 8) x->bias = *(const float* const*)buf;
    else if (a == 11) x->aux = *(float* const*)buf; else if (a == 12) x->auxLd = *(const int64_t*)buf;
    return 0;
}
API int cublasLtMatrixLayoutCreate(void** l, int type, uint64_t rows, uint64_t cols, int64_t ld) { *l = new Layout{ type, rows, cols, ld }; return 0; }
API int cublasLtMatrixLayoutDestroy(void* l) { delete (Layout*)l; return 0; }
API int cublasLtMatrixLayoutSetAttribute(void* l, int a, const void* buf, size_t) {
    Layout* x = (Layout*)l;
    if (a == 1 && *(const int*)buf != 0) return 15; // only column order
    if (a == 5) x->batch = *(const int*)buf; else if (a == 6) x->stride = *(const int64_t*)buf;
    return 0;
}
API int cublasLtMatmulPreferenceCreate(void** p) { *p = new int(0); return 0; }
API int cublasLtMatmulPreferenceDestroy(void* p) { delete (int*)p; return 0; }
API int cublasLtMatmulPreferenceSetAttribute(void*, int, const void*, size_t) { return 0; }
API int cublasLtMatmulAlgoGetHeuristic(void*, void* desc, void*, void*, void*, void*, void*, int, Heur* r, int* n) {
    std::memset(r, 0, sizeof(Heur));
    Desc* d = (Desc*)desc;
    bool known = d->epilogue == EpiDefault || d->epilogue == EpiBias || d->epilogue == EpiGeluAuxBias || d->epilogue == EpiDGelu || d->epilogue == EpiBGradB;
    bool aux = d->epilogue == EpiGeluAuxBias || d->epilogue == EpiDGelu;
    if (!known || (aux && (d->auxLd <= 0 || d->auxLd % 8 != 0))) { *n = 0; return 15; }   // CUBLAS_STATUS_NOT_SUPPORTED
    *n = 1; return 0;
}
static float ld(const Layout* l, const void* p, int64_t i) {
    if (l->type == 14) { uint32_t u = (uint32_t)((const uint16_t*)p)[i] << 16; float f; std::memcpy(&f, &u, 4); return f; }
    return ((const float*)p)[i];
}
// One matmul with everything it reads copied (descriptor, layouts, scalars, pointers), so that it can run later.
struct Call { Desc d; Layout a, b, c; float al, be; const void *A, *B, *C; void* D; };
static void compute(void* arg) {
    const Call& x = *(const Call*)arg; const Desc* d = &x.d; const Layout *a = &x.a, *b = &x.b, *c = &x.c;
    float al = x.al, be = x.be;
    int64_t M = c->rows, N = c->cols, K = d->transA ? a->rows : a->cols;
    size_t ea = a->type == 14 ? 2 : 4, eb = b->type == 14 ? 2 : 4;
    for (int p = 0; p < c->batch; p++) {
        const char* pa = (const char*)x.A + p * a->stride * ea; const char* pb = (const char*)x.B + p * b->stride * eb;
        float* pc = (float*)x.D + p * c->stride; const float* pcin = (const float*)x.C + p * c->stride;
        if (d->epilogue == EpiBGradB && d->bias)
            for (int64_t j = 0; j < N; j++) {
                double s = 0;
                for (int64_t k = 0; k < K; k++) s += d->transB ? ld(b, pb, j + k * b->ld) : ld(b, pb, k + j * b->ld);
                const_cast<float*>(d->bias)[j] = (float)s;
            }
        for (int64_t j = 0; j < N; j++) for (int64_t i = 0; i < M; i++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++) {
                float u = d->transA ? ld(a, pa, k + i * a->ld) : ld(a, pa, i + k * a->ld);
                float w = d->transB ? ld(b, pb, j + k * b->ld) : ld(b, pb, k + j * b->ld);
                s += (double)u * w;
            }
            float v = al * (float)s + (be == 0 ? 0.f : be * pcin[i + j * c->ld]);
            if ((d->epilogue == EpiBias || d->epilogue == EpiGeluAuxBias) && d->bias) v += d->bias[i];
            if (d->epilogue == EpiGeluAuxBias) { d->aux[i + j * d->auxLd] = v; v = (float)gelu(v); }
            if (d->epilogue == EpiDGelu) v = (float)(v * gelu_grad(d->aux[i + j * d->auxLd]));
            pc[i + j * c->ld] = v;
        }
    }
}
static void release(void* arg) { delete (Call*)arg; }
// The fake libcuda's stream queue: runs the call now, or records it into the graph the stream is capturing (as the real
// cuBLASLt's kernels are captured). Without it (another libcuda), the call runs now.
typedef int (*Enqueue)(void* stream, void (*run)(void*), void* arg, void (*release)(void*));
static Enqueue stream_enqueue() {
    static Enqueue e = [] {
        void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
        return lib ? (Enqueue)dlsym(lib, "fake_stream_enqueue") : (Enqueue)nullptr;
    }();
    return e;
}
API int cublasLtMatmul(void*, void* desc, const void* alpha, const void* A, void* Ad, const void* B, void* Bd, const void* beta,
    const void* C, void* Cd, void* D, void* Dd, const void*, void*, size_t, void* stream) {
    Desc* d = (Desc*)desc;
    if ((d->epilogue == EpiGeluAuxBias || d->epilogue == EpiDGelu) && !d->aux) return 7;   // CUBLAS_STATUS_INVALID_VALUE
    if (d->epilogue == EpiBGradB && (!d->bias || ((Layout*)Cd)->batch != 1)) return 7;
    if (d->epilogue == EpiGeluAuxBias || d->epilogue == EpiDGelu) g_fused_gelu++;
    Call* x = new Call{ *d, *(Layout*)Ad, *(Layout*)Bd, *(Layout*)Cd, *(const float*)alpha, *(const float*)beta, A, B, C, D };
    if (Enqueue e = stream_enqueue()) return e(stream, compute, x, release) == 0 ? 0 : 13;   // CUBLAS_STATUS_EXECUTION_FAILED
    compute(x); release(x);
    return 0;
}
