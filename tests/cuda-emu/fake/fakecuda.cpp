// A fake libcuda.so.1 for running CudaBackend on the CPU: device memory is host memory, kernels are the emulated
// kernels/Cuda/Source sources (kernels_all.cpp), launches are synchronous, timing is zero. Only the entry points the
// interop binds are provided. Like the real driver, calls that need a context fail with CUDA_ERROR_INVALID_CONTEXT
// on a thread where none is current, and cuMemGetInfo's free memory falls by what is allocated (tests see leaks).
#include "emu.h"
#include <atomic>
#include <map>
#include <string>
#include <cstdio>
#include <cstdlib>
std::map<std::string, void(*)(void**)>& emu_kernels();
typedef unsigned long long CUdeviceptr;
#define API extern "C" __attribute__((visibility("default"))) int
static const char* kName = "FAKE_CUDA_ERROR";
static thread_local void* g_current = nullptr;
static std::atomic<long long> g_allocated{ 0 };
static std::map<unsigned long long, size_t> g_sizes;
static std::mutex g_sizes_lock;
static const size_t kTotal = (size_t)8 << 30;
#define NEED_CTX if (!g_current) return 201
API cuInit(unsigned) { return 0; }
API cuDriverGetVersion(int* v) { *v = 12040; return 0; }
API cuGetErrorName(int e, const char** s) { *s = e == 500 ? "CUDA_ERROR_NOT_FOUND" : e == 201 ? "CUDA_ERROR_INVALID_CONTEXT" : kName; return 0; }
API cuGetErrorString(int e, const char** s) { *s = e == 500 ? "named symbol not found" : "emulator error"; return 0; }
API cuDeviceGetCount(int* n) { *n = 1; return 0; }
API cuDeviceGet(int* d, int o) { *d = o; return o == 0 ? 0 : 101; }
API cuDeviceGetName(char* name, int len, int) { snprintf(name, len, "CPU emulator (fake libcuda)"); return 0; }
API cuDeviceGetAttribute(int* v, int a, int) {
    switch (a) { case 75: *v = 9; break; case 76: *v = 0; break; case 16: *v = 4; break; case 97: *v = 227 * 1024; break;
        case 1: *v = 1024; break; case 10: *v = 32; break; default: *v = 0; }
    return 0;
}
API cuDeviceTotalMem_v2(size_t* b, int) { *b = (size_t)8 << 30; return 0; }
API cuDevicePrimaryCtxRetain(void** c, int) { static int ctx; *c = &ctx; return 0; }
API cuDevicePrimaryCtxRelease_v2(int) { return 0; }
API cuCtxSetCurrent(void* c) { g_current = c; return 0; }
API cuCtxGetCurrent(void** c) { *c = g_current; return 0; }
API cuCtxSynchronize() { NEED_CTX; return 0; }
API cuMemGetInfo_v2(size_t* f, size_t* t) { NEED_CTX; *t = kTotal; *f = kTotal - (size_t)g_allocated.load(); return 0; }
API cuStreamCreate(void** s, unsigned) { NEED_CTX; *s = new int(0); return 0; }
API cuStreamDestroy_v2(void* s) { delete (int*)s; return 0; }
API cuStreamSynchronize(void*) { return 0; }
API cuStreamWaitEvent(void*, void*, unsigned) { return 0; }
API cuEventCreate(void** e, unsigned) { *e = new int(0); return 0; }
API cuEventDestroy_v2(void* e) { delete (int*)e; return 0; }
API cuEventRecord(void*, void*) { return 0; }
API cuEventSynchronize(void*) { return 0; }
API cuEventElapsedTime(float* ms, void*, void*) { *ms = 0; return 0; }
API cuMemAlloc_v2(CUdeviceptr* p, size_t n) {
    NEED_CTX;
    void* m = aligned_alloc(256, (n + 255) / 256 * 256); if (!m) return 2; std::memset(m, 0xff, n); *p = (CUdeviceptr)m;
    std::lock_guard<std::mutex> g(g_sizes_lock); g_sizes[*p] = n; g_allocated += (long long)n;
    return 0;
}
API cuMemFree_v2(CUdeviceptr p) {
    NEED_CTX;
    { std::lock_guard<std::mutex> g(g_sizes_lock); auto it = g_sizes.find(p); if (it == g_sizes.end()) return 1; g_allocated -= (long long)it->second; g_sizes.erase(it); }
    free((void*)p); return 0;
}
API cuMemAllocHost_v2(void** p, size_t n) { NEED_CTX; *p = malloc(n ? n : 1); return *p ? 0 : 2; }
API cuMemFreeHost(void* p) { NEED_CTX; free(p); return 0; }
API cuMemcpyHtoD_v2(CUdeviceptr d, const void* s, size_t n) { NEED_CTX; std::memcpy((void*)d, s, n); return 0; }
API cuMemcpyDtoH_v2(void* d, CUdeviceptr s, size_t n) { NEED_CTX; std::memcpy(d, (void*)s, n); return 0; }
API cuMemcpyDtoD_v2(CUdeviceptr d, CUdeviceptr s, size_t n) { NEED_CTX; std::memmove((void*)d, (void*)s, n); return 0; }
API cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void* s, size_t n, void*) { NEED_CTX; std::memcpy((void*)d, s, n); return 0; }
API cuMemcpyDtoHAsync_v2(void* d, CUdeviceptr s, size_t n, void*) { NEED_CTX; std::memcpy(d, (void*)s, n); return 0; }
API cuMemcpyDtoDAsync_v2(CUdeviceptr d, CUdeviceptr s, size_t n, void*) { NEED_CTX; std::memmove((void*)d, (void*)s, n); return 0; }
API cuMemsetD32_v2(CUdeviceptr d, unsigned v, size_t n) { NEED_CTX; unsigned* p = (unsigned*)d; for (size_t i = 0; i < n; i++) p[i] = v; return 0; }
API cuMemsetD32Async(CUdeviceptr d, unsigned v, size_t n, void*) { return cuMemsetD32_v2(d, v, n); }
API cuModuleLoadData(void** m, const void*) { NEED_CTX; *m = new int(0); return 0; }
API cuModuleLoadDataEx(void** m, const void*, unsigned, int*, void**) { NEED_CTX; *m = new int(0); return 0; }
API cuModuleUnload(void* m) { delete (int*)m; return 0; }
API cuModuleGetFunction(void** f, void*, const char* name) {
    auto& t = emu_kernels(); auto it = t.find(name);
    if (it == t.end()) return 500;
    *f = (void*)&*it; return 0;
}
API cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned smem, void*, void** args, void**) {
    NEED_CTX;
    auto* e = (std::pair<const std::string, void(*)(void**)>*)f;
    if (smem > sizeof(g_dynsmem)) return 1;
    if ((size_t)bx * by * bz > 1024 || gy > 65535 || gz > 65535) return 1;
    static std::mutex one_at_a_time;   // g_dynsmem and the emulated block are shared: launches from several host threads take turns
    std::lock_guard<std::mutex> g(one_at_a_time);
    launch({ gx, gy, gz }, { bx, by, bz }, [&] { e->second(args); });
    return 0;
}
API cuOccupancyMaxActiveBlocksPerMultiprocessor(int* n, void*, int, size_t) { *n = 1; return 0; }
API cuFuncSetAttribute(void*, int, int) { return 0; }
API cuFuncGetAttribute(int* v, int, void*) { *v = 0; return 0; }
