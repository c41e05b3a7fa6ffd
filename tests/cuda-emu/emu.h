// Minimal CPU emulation of the CUDA features the kernels use: one std::thread per CUDA thread, warp shuffles, and for
// the tensor-core attention mma.sync (m16n8k16 bf16), ldmatrix (x1/x2/x4, .trans) and cp.async (commit/wait groups).
#pragma once
#include <cmath>
#include <cstring>
#include <cstdint>
#include <thread>
#include <barrier>
#include <vector>
#include <mutex>
#include <functional>
#include <atomic>
#include <algorithm>
#include <deque>
#include <cstdio>
#include <cstdlib>
struct dim3e { unsigned x = 1, y = 1, z = 1; };
inline thread_local dim3e threadIdx, blockIdx;
inline dim3e blockDim, gridDim;
inline std::barrier<>* g_block_bar;
inline std::vector<std::barrier<>*> g_warp_bar;
alignas(16) inline unsigned char g_dynsmem[256 * 1024];
inline std::mutex g_atomic;
inline double g_xchg[1024];
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __align__(x) alignas(x)
#define __shared__ static
inline void __syncthreads() { g_block_bar->arrive_and_wait(); }
inline int tid_lin() { return threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y; }
template <class T> T shfl_impl(T v, int src) {
    int t = tid_lin(), w = t / 32, base = w * 32;
    std::memcpy(&g_xchg[t], &v, sizeof(T));
    g_warp_bar[w]->arrive_and_wait();
    T r; std::memcpy(&r, &g_xchg[base + src], sizeof(T));
    g_warp_bar[w]->arrive_and_wait();
    return r;
}
template <class T> T __shfl_xor_sync(unsigned, T v, int m) { return shfl_impl(v, (tid_lin() % 32) ^ m); }
template <class T> T __shfl_sync(unsigned, T v, int s) { return shfl_impl(v, s); }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
inline float __expf(float x) { return expf(x); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
using std::fmaxf; using std::fminf;
template <class T> T atomicAdd(T* p, T v) { std::lock_guard<std::mutex> l(g_atomic); T o = *p; *p = o + v; return o; }
inline int atomicMin(int* p, int v) { std::lock_guard<std::mutex> l(g_atomic); int o = *p; *p = std::min(o, v); return o; }
inline int atomicMax(int* p, int v) { std::lock_guard<std::mutex> l(g_atomic); int o = *p; *p = std::max(o, v); return o; }
inline int atomicExch(int* p, int v) { std::lock_guard<std::mutex> l(g_atomic); int o = *p; *p = v; return o; }
inline void __trap() { abort(); }
// launch: blocks one after another, threads of a block concurrently
inline void launch(dim3e grid, dim3e block, std::function<void()> body) {
    gridDim = grid; blockDim = block;
    int n = block.x * block.y * block.z;
    for (unsigned bz = 0; bz < grid.z; bz++) for (unsigned by = 0; by < grid.y; by++) for (unsigned bx = 0; bx < grid.x; bx++) {
        std::barrier<> bar(n); g_block_bar = &bar;
        std::vector<std::barrier<>*> wb; for (int w = 0; w < (n + 31) / 32; w++) wb.push_back(new std::barrier<>(std::min(32, n - w * 32)));
        g_warp_bar = wb;
        std::vector<std::thread> ts;
        for (int t = 0; t < n; t++) ts.emplace_back([=] {
            blockIdx = { bx, by, bz };
            threadIdx = { (unsigned)(t % block.x), (unsigned)((t / block.x) % block.y), (unsigned)(t / (block.x * block.y)) };
            body();
        });
        for (auto& t : ts) t.join();
        for (auto* b : wb) delete b;
    }
}
struct MmaX { uint32_t a[4], b[2]; };
inline MmaX g_mma[1024];
inline float emu_bf(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; std::memcpy(&f, &u, 4); return f; }
inline void emu_mma(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1) {
    int t = tid_lin(), w = t / 32, lane = t % 32, base = w * 32;
    g_mma[t] = { { a0, a1, a2, a3 }, { b0, b1 } };
    g_warp_bar[w]->arrive_and_wait();
    float A[16][16], Bm[16][8];
    for (int l = 0; l < 32; l++) {
        int g = l >> 2, t4 = l & 3; const MmaX& x = g_mma[base + l];
        for (int h = 0; h < 2; h++) {
            A[g][t4 * 2 + h] = emu_bf((uint16_t)(x.a[0] >> (16 * h)));
            A[g + 8][t4 * 2 + h] = emu_bf((uint16_t)(x.a[1] >> (16 * h)));
            A[g][t4 * 2 + 8 + h] = emu_bf((uint16_t)(x.a[2] >> (16 * h)));
            A[g + 8][t4 * 2 + 8 + h] = emu_bf((uint16_t)(x.a[3] >> (16 * h)));
            Bm[t4 * 2 + h][g] = emu_bf((uint16_t)(x.b[0] >> (16 * h)));
            Bm[t4 * 2 + 8 + h][g] = emu_bf((uint16_t)(x.b[1] >> (16 * h)));
        }
    }
    g_warp_bar[w]->arrive_and_wait();
    int g = lane >> 2, t4 = lane & 3;
    for (int e = 0; e < 4; e++) {
        int r = g + (e >= 2 ? 8 : 0), c = t4 * 2 + (e & 1);
        float s = 0; for (int k = 0; k < 16; k++) s += A[r][k] * Bm[k][c];
        d[e] += s;
    }
}

// ---- the PTX helpers of attention_bf16.cu (prep.py drops that file's own section) ----
inline void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) { emu_mma(d, a[0], a[1], a[2], a[3], b0, b1); }

inline uint32_t emu_rne_bf16(float f) {
    uint32_t u; std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}
inline uint32_t cvt_bf16x2(float lo, float hi) { return emu_rne_bf16(hi) << 16 | emu_rne_bf16(lo); }

inline bool emu_in_smem(const void* p, size_t n) {
    auto a = (const unsigned char*)p; return a >= g_dynsmem && a + n <= g_dynsmem + sizeof(g_dynsmem);
}
[[noreturn]] inline void emu_fail(const char* what) { std::fprintf(stderr, "emu: %s (thread %d, block %u,%u)\n", what, tid_lin(), blockIdx.x, blockIdx.y); std::abort(); }

// cp.async: a copy is queued by its thread at issue and its destination poisoned with 0xff bytes (a bf16 and fp32 NaN),
// so that a read before the wait shows up in the results; commit closes the thread's open group; wait<N> performs the
// copies of all but the N most recently committed groups, oldest first. srcBytes < 16 zero-fills the rest.
struct EmuCopy { void* dst; const void* src; int bytes; };
inline thread_local std::vector<EmuCopy> t_open;
inline thread_local std::deque<std::vector<EmuCopy>> t_groups;
inline void cp_async16(void* dst, const void* src, int srcBytes) {
    if (!emu_in_smem(dst, 16) || (uintptr_t)dst % 16 || (uintptr_t)src % 16) emu_fail("cp.async: destination outside shared memory or an address not 16-byte aligned");
    if (srcBytes < 0 || srcBytes > 16) emu_fail("cp.async: src-size outside 0..16");
    std::memset(dst, 0xff, 16);
    t_open.push_back({ dst, src, srcBytes });
}
inline void cp_async_commit() { t_groups.push_back(std::move(t_open)); t_open.clear(); }
template <int N> void cp_async_wait() {
    while ((int)t_groups.size() > N) {
        for (auto& c : t_groups.front()) { std::memcpy(c.dst, c.src, c.bytes); std::memset((char*)c.dst + c.bytes, 0, 16 - c.bytes); }
        t_groups.pop_front();
    }
}

// ldmatrix.sync.aligned.m8n8.{x1,x2,x4}[.trans].shared.b16 (PTX ISA): lane 8m+r gives the address of row r of matrix m
// (x1: lanes 0-7, x2: lanes 0-15 are read); register m of lane 4r+c receives row r, columns 2c and 2c+1 of matrix m,
// or with .trans column r, rows 2c and 2c+1. Rows are 16 bytes, 16-byte aligned, in shared memory.
inline const uint16_t* g_ldsm[1024];
inline void emu_ldmatrix(int count, bool trans, uint32_t* r, const uint16_t* p) {
    int t = tid_lin(), w = t / 32, lane = t % 32, base = w * 32;
    if (lane < 8 * count && (!emu_in_smem(p, 16) || (uintptr_t)p % 16)) emu_fail("ldmatrix: row address outside shared memory or not 16-byte aligned");
    g_ldsm[t] = p;
    g_warp_bar[w]->arrive_and_wait();
    int row = lane >> 2, c = (lane & 3) * 2;
    for (int m = 0; m < count; m++) {
        uint16_t lo, hi;
        if (!trans) { const uint16_t* a = g_ldsm[base + 8 * m + row]; lo = a[c]; hi = a[c + 1]; }
        else { lo = g_ldsm[base + 8 * m + c][row]; hi = g_ldsm[base + 8 * m + c + 1][row]; }
        r[m] = (uint32_t)hi << 16 | lo;
    }
    g_warp_bar[w]->arrive_and_wait();
}
inline void ldsm_x1(uint32_t (&r)[1], const uint16_t* p) { emu_ldmatrix(1, false, r, p); }
inline void ldsm_x2(uint32_t (&r)[2], const uint16_t* p) { emu_ldmatrix(2, false, r, p); }
inline void ldsm_x4(uint32_t (&r)[4], const uint16_t* p) { emu_ldmatrix(4, false, r, p); }
inline void ldsm_x1_trans(uint32_t (&r)[1], const uint16_t* p) { emu_ldmatrix(1, true, r, p); }
inline void ldsm_x2_trans(uint32_t (&r)[2], const uint16_t* p) { emu_ldmatrix(2, true, r, p); }
inline void ldsm_x4_trans(uint32_t (&r)[4], const uint16_t* p) { emu_ldmatrix(4, true, r, p); }
