// A fake libcublasLt for the CPU emulator: naive column-major matmul with transposes, strided batches, fp32/bf16
// inputs, fp32 output and the bias epilogue; the heuristic always answers one algorithm.
#include <cstdint>
#include <cstring>
#include <cstddef>
#define API extern "C" __attribute__((visibility("default")))
struct Desc { int transA = 0, transB = 0, epilogue = 1; const float* bias = nullptr; };
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
API int cublasLtMatmulAlgoGetHeuristic(void*, void*, void*, void*, void*, void*, void*, int, Heur* r, int* n) { std::memset(r, 0, sizeof(Heur)); *n = 1; return 0; }
static float ld(const Layout* l, const void* p, int64_t i) {
    if (l->type == 14) { uint32_t u = (uint32_t)((const uint16_t*)p)[i] << 16; float f; std::memcpy(&f, &u, 4); return f; }
    return ((const float*)p)[i];
}
API int cublasLtMatmul(void*, void* desc, const void* alpha, const void* A, void* Ad, const void* B, void* Bd, const void* beta,
    const void* C, void* Cd, void* D, void* Dd, const void*, void*, size_t, void*) {
    Desc* d = (Desc*)desc; Layout *a = (Layout*)Ad, *b = (Layout*)Bd, *c = (Layout*)Cd;
    float al = *(const float*)alpha, be = *(const float*)beta;
    int64_t M = c->rows, N = c->cols, K = d->transA ? a->rows : a->cols;
    size_t ea = a->type == 14 ? 2 : 4, eb = b->type == 14 ? 2 : 4;
    for (int p = 0; p < c->batch; p++) {
        const char* pa = (const char*)A + p * a->stride * ea; const char* pb = (const char*)B + p * b->stride * eb;
        float* pc = (float*)D + p * c->stride; const float* pcin = (const float*)C + p * c->stride;
        for (int64_t j = 0; j < N; j++) for (int64_t i = 0; i < M; i++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++) {
                float x = d->transA ? ld(a, pa, k + i * a->ld) : ld(a, pa, i + k * a->ld);
                float y = d->transB ? ld(b, pb, j + k * b->ld) : ld(b, pb, k + j * b->ld);
                s += (double)x * y;
            }
            float v = al * (float)s + (be == 0 ? 0.f : be * pcin[i + j * c->ld]);
            if (d->epilogue == 4 && d->bias) v += d->bias[i];
            pc[i + j * c->ld] = v;
        }
    }
    return 0;
}
