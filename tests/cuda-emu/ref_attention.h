// Double-precision masked attention reference shared by the fp32 (att_test) and bf16 (bf_test) kernel checks.
#pragma once
#include <cmath>
#include <vector>
#include <algorithm>
// The masks from their definitions (DESIGN.md 1.1), not from the kernels' helpers: kind 0 BD3 over x_noisy (+) x_clean
// (L = T/2 each, blocks of bs), 1 block-causal, 2 causal, 3 full.
static bool allowedH(int kind, int T, int bs, int i, int j) {
    if (kind == 3) return true;
    if (kind == 2) return j <= i;
    if (kind == 1) return j / bs <= i / bs;
    int L = T / 2; bool qNoisy = i < L, kNoisy = j < L; int qb = (i % L) / bs, kb = (j % L) / bs;
    if (qNoisy && kNoisy) return qb == kb;
    if (qNoisy) return kb < qb;
    if (kNoisy) return false;
    return kb <= qb;
}
static double relerr(const std::vector<float>& a, const std::vector<double>& e) {
    double mr = 0, md = 0; for (size_t i = 0; i < a.size(); i++) { mr = std::max(mr, std::fabs(e[i])); double d = std::fabs(a[i] - e[i]); if (std::isnan(a[i])) d = 1e30; md = std::max(md, d); }
    return md / std::max(mr, 1e-9);
}

// Output, logsumexp and d(qkv) of masked softmax attention over qkv [B, T, 3, H, hd] for upstream gradient dout.
static void reference_attention(int kind, int bs, int B, int H, int T, int hd, float scale,
                                const std::vector<float>& qkv, const std::vector<float>& dout,
                                std::vector<double>& eo, std::vector<double>& el, std::vector<double>& ed) {
    int rs = 3 * H * hd, D = H * hd;
    struct { int kind, bs; } c{ kind, bs };
    std::fill(eo.begin(), eo.end(), 0.0); std::fill(ed.begin(), ed.end(), 0.0);
    for (int b = 0; b < B; b++) for (int h = 0; h < H; h++) for (int i = 0; i < T; i++) {
        std::vector<double> p(T); double mx = -INFINITY;
        for (int j = 0; j < T; j++) { if (!allowedH(c.kind, T, c.bs, i, j)) { p[j] = -INFINITY; continue; }
            double s = 0; for (int d = 0; d < hd; d++) s += (double)qkv[(b*T+i)*rs + h*hd + d] * qkv[(b*T+j)*rs + D + h*hd + d];
            p[j] = s * scale; mx = std::max(mx, p[j]); }
        double sum = 0; for (int j = 0; j < T; j++) { p[j] = std::isinf(p[j]) ? 0 : std::exp(p[j] - mx); sum += p[j]; }
        el[(b*H+h)*T+i] = mx + std::log(sum);
        for (int j = 0; j < T; j++) p[j] /= sum;
        for (int d = 0; d < hd; d++) { double a = 0; for (int j = 0; j < T; j++) a += p[j] * qkv[(b*T+j)*rs + 2*D + h*hd + d]; eo[(b*T+i)*D + h*hd + d] = a; }
        std::vector<double> dp(T); double Dd = 0;
        for (int j = 0; j < T; j++) { if (p[j] == 0) continue; double a = 0; for (int d = 0; d < hd; d++) a += dout[(b*T+i)*D + h*hd + d] * qkv[(b*T+j)*rs + 2*D + h*hd + d]; dp[j] = a; Dd += p[j] * a; }
        for (int j = 0; j < T; j++) { if (p[j] == 0) continue; double ds = p[j] * (dp[j] - Dd);
            for (int d = 0; d < hd; d++) {
                ed[(b*T+i)*rs + h*hd + d] += ds * qkv[(b*T+j)*rs + D + h*hd + d] * scale;
                ed[(b*T+j)*rs + D + h*hd + d] += ds * qkv[(b*T+i)*rs + h*hd + d] * scale;
                ed[(b*T+j)*rs + 2*D + h*hd + d] += p[j] * dout[(b*T+i)*D + h*hd + d]; } }
    }
}
