#include "bf.cpp"
#include <cstdio>
#include <random>
#include "ref_attention.h"
int main() {
    std::mt19937 rng(1); std::uniform_real_distribution<float> U(-2, 2);
    struct C { int kind, T, bs, hd; };
    std::vector<C> cases = { {0, 40, 4, 64}, {0, 80, 1, 32}, {0, 132, 33, 64}, {1, 45, 5, 64}, {2, 77, 1, 32}, {3, 35, 1, 64}, {0, 96, 16, 128}, {0, 160, 4, 64} };
    int fails = 0;
    for (auto c : cases) {
        int B = 2, H = 2, hd = c.hd, T = c.T, rs = 3 * H * hd, D = H * hd;
        float scale = 1.f / std::sqrt((float)hd);
        std::vector<float> qkv(B * T * rs), dout(B * T * D), out(B * T * D, NAN), lse(B * H * T, NAN), Dv(B * H * T), dq(B * T * rs, NAN);
        for (auto& x : qkv) x = U(rng); for (auto& x : dout) x = U(rng);
        std::vector<double> eo(B * T * D), el(B * H * T), ed(B * T * rs, 0.0);
        reference_attention(c.kind, c.bs, B, H, T, hd, scale, qkv, dout, eo, el, ed);
        dim3e grid{ (unsigned)((T + 63) / 64), (unsigned)(B * H), 1 }, blk{ 128, 1, 1 };
        launch(grid, blk, [&] {
            if (hd == 32) fbd_attn_fwd_bf16_hd32(qkv.data(), out.data(), lse.data(), B, H, T, c.kind, c.bs, scale);
            else if (hd == 64) fbd_attn_fwd_bf16_hd64(qkv.data(), out.data(), lse.data(), B, H, T, c.kind, c.bs, scale);
            else fbd_attn_fwd_bf16_hd128(qkv.data(), out.data(), lse.data(), B, H, T, c.kind, c.bs, scale); });
        double e1 = relerr(out, eo), e2 = relerr(lse, el);
        for (int b = 0; b < B; b++) for (int i = 0; i < T; i++) for (int h = 0; h < H; h++) { double s = 0; for (int d = 0; d < hd; d++) s += (double)out[(b*T+i)*D+h*hd+d] * dout[(b*T+i)*D+h*hd+d]; Dv[(b*H+h)*T+i] = (float)s; }
        double e3 = 0;
        if (hd <= 64) {
            std::fill(dq.begin(), dq.end(), 0.f);
            launch(grid, blk, [&] {
                if (hd == 32) fbd_attn_bwd_bf16_hd32(qkv.data(), dout.data(), lse.data(), Dv.data(), dq.data(), B, H, T, c.kind, c.bs, scale);
                else fbd_attn_bwd_bf16_hd64(qkv.data(), dout.data(), lse.data(), Dv.data(), dq.data(), B, H, T, c.kind, c.bs, scale); });
            e3 = relerr(dq, ed);
        }
        bool ok = e1 < 2e-2 && e2 < 2e-2 && e3 < 2e-2; fails += !ok;
        printf("kind=%d T=%d bs=%d hd=%d: out %.2e lse %.2e dqkv %.2e %s\n", c.kind, T, c.bs, hd, e1, e2, e3, ok ? "OK" : "FAIL");
    }
    return fails;
}
