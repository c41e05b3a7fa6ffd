#include "att.cpp"
#include <cstdio>
#include <random>
#include "ref_attention.h"
int main() {
    std::mt19937 rng(1); std::uniform_real_distribution<float> U(-2, 2);
    struct C { int kind, T, bs, hd; };
    std::vector<C> cases = { {0, 40, 4, 48}, {0, 80, 1, 32}, {0, 66, 33, 64}, {1, 45, 5, 48}, {2, 37, 1, 32}, {3, 35, 1, 40}, {0, 96, 16, 128} };
    int fails = 0;
    for (auto c : cases) {
        int B = 2, H = 2, hd = c.hd, T = c.T, rs = 3 * H * hd, D = H * hd;
        float scale = 1.f / std::sqrt((float)hd);
        std::vector<float> qkv(B * T * rs), dout(B * T * D), out(B * T * D, NAN), lse(B * H * T, NAN), Dv(B * H * T), dq(B * T * rs, NAN);
        for (auto& x : qkv) x = U(rng); for (auto& x : dout) x = U(rng);
        std::vector<double> eo(B * T * D), el(B * H * T), ed(B * T * rs, 0.0);
        reference_attention(c.kind, c.bs, B, H, T, hd, scale, qkv, dout, eo, el, ed);
        dim3e grid{ (unsigned)((T + 31) / 32), (unsigned)(B * H), 1 }, blk{ 128, 1, 1 };
        launch(grid, blk, [&] { fbd_attn_fwd_f32(qkv.data(), out.data(), lse.data(), B, H, hd, T, c.kind, c.bs, scale); });
        double e1 = relerr(out, eo), e2 = relerr(lse, el);
        launch({ (unsigned)((B * T * H * 32 + 255) / 256), 1, 1 }, { 256, 1, 1 }, [&] { fbd_attn_bwd_dot(out.data(), dout.data(), Dv.data(), B, H, hd, T); });
        launch(grid, blk, [&] { fbd_attn_bwd_dq_f32(qkv.data(), dout.data(), lse.data(), Dv.data(), dq.data(), B, H, hd, T, c.kind, c.bs, scale); });
        launch(grid, blk, [&] { fbd_attn_bwd_dkv_f32(qkv.data(), dout.data(), lse.data(), Dv.data(), dq.data(), B, H, hd, T, c.kind, c.bs, scale); });
        double e3 = relerr(dq, ed);
        bool ok = e1 < 1e-5 && e2 < 1e-5 && e3 < 1e-5; fails += !ok;
        printf("kind=%d T=%d bs=%d hd=%d: out %.2e lse %.2e dqkv %.2e %s\n", c.kind, T, c.bs, hd, e1, e2, e3, ok ? "OK" : "FAIL");
    }
    // decode: blockLen queries vs cacheLen cache + block, with splits
    for (auto [L, cl, splits] : std::vector<std::tuple<int,int,int>>{ {4, 0, 1}, {4, 70, 1}, {4, 70, 3}, {33, 40, 2}, {1, 300, 4} }) {
        int B = 2, H = 2, hd = 48, D = H * hd, rs = 3 * D, cap = cl + 5;
        float scale = 1.f / std::sqrt((float)hd);
        std::vector<float> qkv(B * L * rs), kc(B * cap * D), vc(B * cap * D), out(B * L * D, NAN);
        for (auto& x : qkv) x = U(rng); for (auto& x : kc) x = U(rng); for (auto& x : vc) x = U(rng);
        std::vector<double> eo(B * L * D);
        for (int b = 0; b < B; b++) for (int h = 0; h < H; h++) for (int i = 0; i < L; i++) {
            int nk = cl + L; std::vector<double> p(nk); double mx = -INFINITY;
            auto K = [&](int j, int d) { return j < cl ? kc[(b*cap+j)*D + h*hd + d] : qkv[(b*L + j - cl)*rs + D + h*hd + d]; };
            auto V = [&](int j, int d) { return j < cl ? vc[(b*cap+j)*D + h*hd + d] : qkv[(b*L + j - cl)*rs + 2*D + h*hd + d]; };
            for (int j = 0; j < nk; j++) { double s = 0; for (int d = 0; d < hd; d++) s += (double)qkv[(b*L+i)*rs + h*hd + d] * K(j, d); p[j] = s * scale; mx = std::max(mx, p[j]); }
            double sum = 0; for (auto& x : p) { x = std::exp(x - mx); sum += x; }
            for (int d = 0; d < hd; d++) { double a = 0; for (int j = 0; j < nk; j++) a += p[j] * V(j, d); eo[(b*L+i)*D + h*hd + d] = a / sum; }
        }
        int nk = cl + L, per = ((nk + splits - 1) / splits + 31) / 32 * 32; splits = (nk + per - 1) / per;
        long rows = (long)splits * B * H * L;
        std::vector<float> pO(rows * hd), pM(rows), pL(rows);
        launch({ (unsigned)((L + 31) / 32), (unsigned)splits, (unsigned)(B * H) }, { 128, 1, 1 }, [&] {
            fbd_decode_attn_f32(qkv.data(), kc.data(), vc.data(), out.data(), pO.data(), pM.data(), pL.data(), B, H, hd, L, cl, cap, per, scale); });
        if (splits > 1) launch({ (unsigned)((B * H * L * 32 + 255) / 256), 1, 1 }, { 256, 1, 1 }, [&] {
            fbd_decode_combine(pO.data(), pM.data(), pL.data(), out.data(), B, H, hd, L, splits); });
        double e = relerr(out, eo); bool ok = e < 1e-5; fails += !ok;
        printf("decode L'=%d cache=%d splits=%d: %.2e %s\n", L, cl, splits, e, ok ? "OK" : "FAIL");
    }
    return fails;
}
