// Minimal CPU emulation of the CUDA features the fp32 kernels use: one std::thread per CUDA thread.
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
