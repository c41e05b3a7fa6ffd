// A fake libcuda.so.1 for running CudaBackend on the CPU: device memory is host memory, kernels are the emulated
// kernels/Cuda/Source sources (kernels_all.cpp), launches are synchronous, timing is zero. Only the entry points the
// interop binds are provided. Like the real driver, calls that need a context fail with CUDA_ERROR_INVALID_CONTEXT
// on a thread where none is current, and cuMemGetInfo's free memory falls by what is allocated (tests see leaks).
// fake_host_syncs() counts the calls that make a real host wait for the device (stream, event and context
// synchronisation, the synchronous copies), so tests can check that a device-resident step issues none.
// Stream capture and graphs are emulated: while a stream captures, its launches, async copies and memsets are recorded
// (a launch keeps a copy of its argument values, a host-to-device copy keeps the host address it reads at replay) and
// nothing runs; synchronising a capturing stream, or an event recorded in a capture, fails as on the real driver;
// cuGraphLaunch replays the recorded operations in order. fake_kernel_launches() and fake_graph_launches() count.
#include "emu.h"
#include <atomic>
#include <map>
#include <string>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <memory>
#include <vector>
#include "fake_kernels.h"
std::map<std::string, EmuKernel>& emu_kernels();
typedef std::pair<const std::string, EmuKernel> KernelEntry;
typedef unsigned long long CUdeviceptr;
#define API extern "C" __attribute__((visibility("default"))) int
static const char* kName = "FAKE_CUDA_ERROR";
static thread_local void* g_current = nullptr;
static std::atomic<long long> g_allocated{ 0 };
static std::map<unsigned long long, size_t> g_sizes;
static std::mutex g_sizes_lock;
static const size_t kTotal = (size_t)8 << 30;
static std::atomic<long long> g_host_syncs{ 0 };
#define NEED_CTX if (!g_current) return 201
#define HOST_SYNC g_host_syncs++
extern "C" __attribute__((visibility("default"))) long long fake_host_syncs() { return g_host_syncs.load(); }

// ---- stream capture and graphs ----
struct Op {
    enum Kind { Kernel, Copy, Memset, Host } kind = Kernel;
    std::shared_ptr<void> host;               // Host: the argument of hostRun (a call of the fake cuBLASLt), freed with the last copy
    void (*hostRun)(void*) = nullptr;
    const KernelEntry* kernel = nullptr;
    dim3e grid, block; unsigned smem = 0;
    std::vector<unsigned char> args;          // the argument values, back to back
    void* dst = nullptr; const void* src = nullptr; size_t bytes = 0; unsigned value = 0;
};
struct Graph { std::vector<Op> ops; };
static std::mutex g_capture_lock;
static std::map<void*, Graph*> g_capturing;   // stream -> the graph it is capturing
static std::set<void*> g_captured_events;     // events last recorded inside a capture
static std::atomic<long long> g_kernel_launches{ 0 }, g_graph_launches{ 0 };
extern "C" __attribute__((visibility("default"))) long long fake_kernel_launches() { return g_kernel_launches.load(); }
extern "C" __attribute__((visibility("default"))) long long fake_graph_launches() { return g_graph_launches.load(); }
static Graph* capturing(void* stream) { std::lock_guard<std::mutex> g(g_capture_lock); auto it = g_capturing.find(stream); return it == g_capturing.end() ? nullptr : it->second; }
static bool any_capture() { std::lock_guard<std::mutex> g(g_capture_lock); return !g_capturing.empty(); }
static void run(const Op& o) {
    if (o.kind == Op::Copy) { std::memmove(o.dst, o.src, o.bytes); return; }
    if (o.kind == Op::Memset) { unsigned* p = (unsigned*)o.dst; for (size_t i = 0; i < o.bytes; i++) p[i] = o.value; return; }
    if (o.kind == Op::Host) { o.hostRun(o.host.get()); return; }
    std::vector<void*> ptrs; size_t at = 0;
    for (size_t n : o.kernel->second.argSizes) { ptrs.push_back((void*)(o.args.data() + at)); at += n; }
    static std::mutex one_at_a_time;   // g_dynsmem and the emulated block are shared: launches from several host threads take turns
    std::lock_guard<std::mutex> g(one_at_a_time);
    launch(o.grid, o.block, [&] { o.kernel->second.run(ptrs.data()); });
    g_kernel_launches++;
}
// runs op now, or records it when the stream captures
static int issue(void* stream, Op&& op) {
    if (Graph* g = capturing(stream)) { g->ops.push_back(std::move(op)); return 0; }
    run(op); return 0;
}
// Work of another fake library (cuBLASLt) in stream order: run now, or recorded while the stream captures.
extern "C" __attribute__((visibility("default"))) int fake_stream_enqueue(void* stream, void (*fn)(void*), void* arg, void (*release)(void*)) {
    Op o; o.kind = Op::Host; o.hostRun = fn; o.host = std::shared_ptr<void>(arg, release);
    return issue(stream, std::move(o));
}
API cuInit(unsigned) { return 0; }
API cuDriverGetVersion(int* v) { *v = 12040; return 0; }
API cuGetErrorName(int e, const char** s) {
    *s = e == 500 ? "CUDA_ERROR_NOT_FOUND" : e == 201 ? "CUDA_ERROR_INVALID_CONTEXT" : e == 900 ? "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED"
       : e == 903 ? "CUDA_ERROR_STREAM_CAPTURE_UNMATCHED" : e == 907 ? "CUDA_ERROR_CAPTURED_EVENT" : kName;
    return 0;
}
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
API cuCtxSynchronize() { NEED_CTX; HOST_SYNC; return any_capture() ? 900 : 0; }
API cuMemGetInfo_v2(size_t* f, size_t* t) { NEED_CTX; *t = kTotal; *f = kTotal - (size_t)g_allocated.load(); return 0; }
API cuStreamCreate(void** s, unsigned) { NEED_CTX; *s = new int(0); return 0; }
API cuStreamDestroy_v2(void* s) { delete (int*)s; return 0; }
API cuStreamSynchronize(void* s) { HOST_SYNC; return capturing(s) ? 900 : 0; }
API cuStreamWaitEvent(void*, void*, unsigned) { return 0; }
API cuEventCreate(void** e, unsigned) { *e = new int(0); return 0; }
API cuEventDestroy_v2(void* e) { delete (int*)e; return 0; }
static bool captured_event(void* e) { std::lock_guard<std::mutex> g(g_capture_lock); return g_captured_events.count(e) > 0; }
API cuEventRecord(void* e, void* s) {
    bool inCapture = capturing(s) != nullptr;
    std::lock_guard<std::mutex> g(g_capture_lock);
    if (inCapture) g_captured_events.insert(e); else g_captured_events.erase(e);
    return 0;
}
API cuEventSynchronize(void* e) { HOST_SYNC; return captured_event(e) ? 907 : 0; }
API cuEventQuery(void* e) { return captured_event(e) ? 907 : 0; }   // launches are synchronous: recorded work is always done
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
API cuMemcpyHtoD_v2(CUdeviceptr d, const void* s, size_t n) { NEED_CTX; HOST_SYNC; std::memcpy((void*)d, s, n); return 0; }
API cuMemcpyDtoH_v2(void* d, CUdeviceptr s, size_t n) { NEED_CTX; HOST_SYNC; std::memcpy(d, (void*)s, n); return 0; }
API cuMemcpyDtoD_v2(CUdeviceptr d, CUdeviceptr s, size_t n) { NEED_CTX; std::memmove((void*)d, (void*)s, n); return 0; }
static Op copy_op(void* d, const void* s, size_t n) { Op o; o.kind = Op::Copy; o.dst = d; o.src = s; o.bytes = n; return o; }
API cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void* s, size_t n, void* st) { NEED_CTX; return issue(st, copy_op((void*)d, s, n)); }
API cuMemcpyDtoHAsync_v2(void* d, CUdeviceptr s, size_t n, void* st) { NEED_CTX; return issue(st, copy_op(d, (const void*)s, n)); }
API cuMemcpyDtoDAsync_v2(CUdeviceptr d, CUdeviceptr s, size_t n, void* st) { NEED_CTX; return issue(st, copy_op((void*)d, (const void*)s, n)); }
API cuMemsetD32_v2(CUdeviceptr d, unsigned v, size_t n) { NEED_CTX; unsigned* p = (unsigned*)d; for (size_t i = 0; i < n; i++) p[i] = v; return 0; }
API cuMemsetD32Async(CUdeviceptr d, unsigned v, size_t n, void* st) { NEED_CTX; Op o; o.kind = Op::Memset; o.dst = (void*)d; o.bytes = n; o.value = v; return issue(st, std::move(o)); }
API cuStreamBeginCapture_v2(void* s, int) {
    NEED_CTX;
    std::lock_guard<std::mutex> g(g_capture_lock);
    if (g_capturing.count(s)) return 900;
    g_capturing[s] = new Graph();
    return 0;
}
API cuStreamEndCapture(void* s, void** graph) {
    std::lock_guard<std::mutex> g(g_capture_lock);
    auto it = g_capturing.find(s);
    if (it == g_capturing.end()) { *graph = nullptr; return 903; }
    *graph = it->second; g_capturing.erase(it);
    return 0;
}
API cuGraphInstantiateWithFlags(void** exec, void* graph, unsigned long long) { *exec = new Graph(*(Graph*)graph); return 0; }
API cuGraphLaunch(void* exec, void* s) {
    NEED_CTX;
    if (capturing(s)) return 900;
    for (const Op& o : ((Graph*)exec)->ops) run(o);
    g_graph_launches++;
    return 0;
}
API cuGraphDestroy(void* graph) { delete (Graph*)graph; return 0; }
API cuGraphExecDestroy(void* exec) { delete (Graph*)exec; return 0; }
API cuModuleLoadData(void** m, const void*) { NEED_CTX; *m = new int(0); return 0; }
API cuModuleLoadDataEx(void** m, const void*, unsigned, int*, void**) { NEED_CTX; *m = new int(0); return 0; }
API cuModuleUnload(void* m) { delete (int*)m; return 0; }
API cuModuleGetFunction(void** f, void*, const char* name) {
    auto& t = emu_kernels(); auto it = t.find(name);
    if (it == t.end()) return 500;
    *f = (void*)&*it; return 0;
}
API cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned smem, void* stream, void** args, void**) {
    NEED_CTX;
    auto* e = (const KernelEntry*)f;
    if (smem > sizeof(g_dynsmem)) return 1;
    if ((size_t)bx * by * bz > 1024 || gy > 65535 || gz > 65535) return 1;
    Op o; o.kernel = e; o.grid = { gx, gy, gz }; o.block = { bx, by, bz }; o.smem = smem;
    for (size_t i = 0; i < e->second.argSizes.size(); i++)
        o.args.insert(o.args.end(), (const unsigned char*)args[i], (const unsigned char*)args[i] + e->second.argSizes[i]);
    return issue(stream, std::move(o));
}
API cuOccupancyMaxActiveBlocksPerMultiprocessor(int* n, void*, int, size_t) { *n = 1; return 0; }
API cuFuncSetAttribute(void*, int, int) { return 0; }
API cuFuncGetAttribute(int* v, int, void*) { *v = 0; return 0; }
