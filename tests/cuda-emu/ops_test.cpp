#include "emu.h"
#include <cstdio>
#include <random>
#include <numeric>
#include <string>
namespace ew {
#include "elementwise.cpp"
}
namespace nm {
#include "norms.cpp"
}
namespace ls {
#include "loss.cpp"
}
namespace sp {
#include "sampling.cpp"
}
static int fails = 0;
static void check(const char* what, const std::vector<float>& a, const std::vector<double>& e, double tol = 1e-5) {
    double mr = 0, md = 0; for (size_t i = 0; i < a.size(); i++) { mr = std::max(mr, std::fabs(e[i])); double d = std::isnan(a[i]) ? 1e30 : std::fabs(a[i] - e[i]); md = std::max(md, d); }
    double r = md / std::max(mr, 1e-9); bool ok = r < tol; fails += !ok;
    printf("%-28s rel %.2e %s\n", what, r, ok ? "OK" : "FAIL");
}
int main(int argc, char** argv) {
    // optional argument: run only the sampling checks (they are the slow part under a loaded CPU)
    bool onlySampling = argc > 1 && std::string(argv[1]) == "sampling";
    std::mt19937 rng(7); std::uniform_real_distribution<float> U(-1, 1);
    auto rnd = [&](size_t n, float s = 1) { std::vector<float> v(n); for (auto& x : v) x = U(rng) * s; return v; };
    // layernorm
    if (!onlySampling) for (auto [rows, dim] : std::vector<std::pair<int,int>>{ {7, 33}, {40, 300} }) {
        auto x = rnd(rows * dim, 3), w = rnd(dim), bb = rnd(dim), dy = rnd(rows * dim);
        std::vector<float> y(rows * dim, NAN), mean(rows, NAN), rstd(rows, NAN), dx(rows * dim, 0.5f), dw(dim, 0.25f), db(dim, -0.5f);
        std::vector<nm::u16> y16(rows * dim, 0xffff);
        std::vector<double> ey(rows * dim), edx(rows * dim), edw(dim, 0.25), edb(dim, -0.5);
        for (int r = 0; r < rows; r++) {
            double mu = 0; for (int c = 0; c < dim; c++) mu += x[r*dim+c]; mu /= dim;
            double var = 0; for (int c = 0; c < dim; c++) var += (x[r*dim+c]-mu)*(x[r*dim+c]-mu); var /= dim;
            double rs = 1 / std::sqrt(var + 1e-5), mg = 0, mgx = 0;
            for (int c = 0; c < dim; c++) { double xh = (x[r*dim+c]-mu)*rs; ey[r*dim+c] = xh*w[c] + bb[c]; double g = dy[r*dim+c]*w[c]; mg += g; mgx += g*xh; edw[c] += dy[r*dim+c]*xh; edb[c] += dy[r*dim+c]; }
            mg /= dim; mgx /= dim;
            for (int c = 0; c < dim; c++) { double xh = (x[r*dim+c]-mu)*rs; edx[r*dim+c] = 0.5 + rs*(dy[r*dim+c]*w[c] - mg - xh*mgx); }
        }
        int threads = std::min(256, (dim + 31) / 32 * 32);
        launch({ (unsigned)rows, 1, 1 }, { (unsigned)threads, 1, 1 }, [&] { nm::fbd_layernorm_fwd(x.data(), w.data(), bb.data(), y.data(), y16.data(), mean.data(), rstd.data(), rows, dim, 1e-5f); });
        launch({ (unsigned)rows, 1, 1 }, { (unsigned)threads, 1, 1 }, [&] { nm::fbd_layernorm_bwd_dx(dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(), rows, dim); });
        int chunk = 16;
        launch({ (unsigned)((dim + 31) / 32), (unsigned)((rows + chunk - 1) / chunk), 1 }, { 32, 8, 1 }, [&] { nm::fbd_layernorm_bwd_dw(dy.data(), x.data(), mean.data(), rstd.data(), dw.data(), db.data(), rows, dim, chunk); });
        std::vector<float> got16(rows * dim); std::vector<double> e16(y.begin(), y.end());
        for (int i = 0; i < rows * dim; i++) { uint32_t u = (uint32_t)y16[i] << 16; std::memcpy(&got16[i], &u, 4); }
        check("layernorm y", y, ey); check("layernorm y as bf16", got16, e16, 4e-3); check("layernorm dx", dx, edx); check("layernorm dw", dw, edw); check("layernorm db", db, edb);
    }
    // residual gated with dropout
    if (!onlySampling) {
        int rows = 21, dim = 70; float p = 0.3f; unsigned long long seed = 0x1234567890ULL; float ks = 1.f / (1.f - p);
        auto x = rnd(rows * dim), y = rnd(rows * dim), g = rnd(dim), dx = rnd(rows * dim);
        std::vector<float> dy(rows * dim, NAN), dg(dim, 1.f);
        std::vector<double> ex(rows * dim), edy(rows * dim), edg(dim, 1.0);
        int kept = 0;
        for (int r = 0; r < rows; r++) for (int c = 0; c < dim; c++) { int i = r*dim+c; bool k = nm::fbd_keep(seed, i, p); kept += k;
            ex[i] = x[i] + (k ? g[c]*ks*y[i] : 0); edy[i] = k ? dx[i]*g[c]*ks : 0; edg[c] += k ? dx[i]*ks*y[i] : 0; }
        launch({ 4, 1, 1 }, { 256, 1, 1 }, [&] { nm::fbd_residual_gated_fwd(x.data(), y.data(), g.data(), rows, dim, p, ks, seed); });
        launch({ (unsigned)((dim + 31) / 32), 3, 1 }, { 32, 8, 1 }, [&] { nm::fbd_residual_gated_bwd(dx.data(), y.data(), g.data(), dy.data(), dg.data(), rows, dim, p, ks, seed, 8); });
        check("residual fwd", x, ex); check("residual dy", dy, edy); check("residual dgate", dg, edg);
        printf("  kept fraction %.3f (p=%.2f)\n", kept / (double)(rows * dim), p);
    }
    // SUBS cross-entropy
    if (!onlySampling) for (auto [rows, vocab, maskId] : std::vector<std::tuple<int,int,int>>{ {9, 1001, 1000}, {5, 300, -1}, {3, 50258, 50257} }) {
        auto lg = rnd(rows * vocab, 6); std::vector<int> tg(rows); std::vector<float> wt(rows), loss(rows, NAN);
        for (int r = 0; r < rows; r++) { tg[r] = (r * 37 + 5) % (maskId > 0 ? maskId : vocab); wt[r] = r % 3 == 1 ? 0.f : 0.5f + r; }
        std::vector<double> el(rows), eg(rows * vocab);
        for (int r = 0; r < rows; r++) {
            double mx = -INFINITY; for (int j = 0; j < vocab; j++) if (j != maskId) mx = std::max(mx, (double)lg[r*vocab+j]);
            double s = 0; for (int j = 0; j < vocab; j++) if (j != maskId) s += std::exp(lg[r*vocab+j] - mx);
            double lse = mx + std::log(s), sc = 0.37 * wt[r];
            el[r] = wt[r] == 0 ? 0 : wt[r] * (lse - lg[r*vocab+tg[r]]);
            for (int j = 0; j < vocab; j++) eg[r*vocab+j] = (wt[r] == 0 || j == maskId) ? 0 : sc * (std::exp(lg[r*vocab+j] - lse) - (j == tg[r]));
        }
        launch({ (unsigned)rows, 1, 1 }, { 512, 1, 1 }, [&] { ls::fbd_subs_ce(lg.data(), tg.data(), wt.data(), loss.data(), rows, vocab, maskId, 0.37f, 1); });
        check("subs ce loss", loss, el); check("subs ce grad", lg, eg);
    }
    // reductions, column sum, adamw
    if (!onlySampling) {
        int n = 100003; auto x = rnd(n); std::vector<double> part(1024, NAN);
        launch({ 64, 1, 1 }, { 256, 1, 1 }, [&] { ew::fbd_reduce_sum(x.data(), n, 1, part.data()); });
        double s = 0, e = 0; for (int i = 0; i < 64; i++) s += part[i]; for (float v : x) e += (double)v * v;
        check("sum of squares", { (float)s }, { e });
        int rows = 300, cols = 77; auto m = rnd(rows * cols); std::vector<float> cs(cols, 0.f); std::vector<double> ecs(cols, 0);
        for (int r = 0; r < rows; r++) for (int c = 0; c < cols; c++) ecs[c] += m[r*cols+c];
        launch({ 3, 10, 1 }, { 32, 8, 1 }, [&] { ew::fbd_column_sum(cs.data(), m.data(), rows, cols, 32); });
        check("column sum", cs, ecs);
    }
    // sampling vs a port of CpuBackend.SampleCategorical (nucleus: cumsum <= p plus the top token)
    {
        struct S { int rows, vocab, mask; float T, P; bool ties; };
        for (S c : std::vector<S>{ {6, 1000, 999, 1.f, 0.9f, false}, {6, 200, 3, 0.7f, 1.f, false}, {6, 300, -1, 1.f, 0.5f, true}, {4, 64, 0, 0.f, 0.9f, false}, {3, 50258, 50257, 1.f, 0.9f, false} }) {
            auto lg = rnd(c.rows * c.vocab, 5); if (c.ties) for (auto& v : lg) v = std::round(v);
            std::vector<float> u(c.rows), probs(c.rows, NAN), scratch(c.rows * c.vocab); std::vector<int> tok(c.rows, -7);
            for (auto& v : u) v = (U(rng) + 1) / 2;
            launch({ (unsigned)c.rows, 1, 1 }, { 256, 1, 1 }, [&] { sp::fbd_sample(lg.data(), c.rows, c.vocab, c.mask, c.T, c.P, u.data(), tok.data(), probs.data(), scratch.data()); });
            int bad = 0; std::vector<double> ep(c.rows);
            for (int r = 0; r < c.rows; r++) {
                std::vector<float> p(lg.begin() + r * c.vocab, lg.begin() + (r + 1) * c.vocab);
                if (c.mask >= 0) p[c.mask] = -INFINITY;
                int pick = -1; double prob = 1;
                if (c.T <= 0) { pick = (int)(std::max_element(p.begin(), p.end()) - p.begin()); }
                else {
                    float inv = 1.f / c.T; for (auto& v : p) v *= inv;
                    float mx = *std::max_element(p.begin(), p.end()); double s = 0; for (auto& v : p) { v = std::exp(v - mx); s += v; } for (auto& v : p) v = (float)(v / s);
                    std::vector<int> order(c.vocab); std::iota(order.begin(), order.end(), 0); int n = c.vocab; double total = 1;
                    if (c.P < 1) { std::sort(order.begin(), order.end(), [&](int a, int b) { return p[a] != p[b] ? p[a] > p[b] : a < b; });
                        // bd3lms nucleus: cumsum <= p, the top token always kept
                        double cum = 0; n = 0; while (n < c.vocab && (n == 0 || cum + p[order[n]] <= c.P)) cum += p[order[n++]]; total = cum; }
                    double target = u[r] * total, acc = 0;
                    for (int j = 0; j < n; j++) { float pj = p[order[j]]; if (pj <= 0) continue; pick = order[j]; acc += pj; if (target < acc) break; }
                    prob = p[pick] / total;
                }
                bad += pick != tok[r]; ep[r] = (float)prob;
            }
            char name[64]; snprintf(name, 64, "sample V=%d T=%.1f p=%.1f", c.vocab, c.T, c.P);
            printf("  %s: %d/%d tokens differ\n", name, bad, c.rows); fails += bad != 0;
            check(name, probs, ep);
        }
    }
    // nucleus on hand-made distributions: {0.6, 0.25, 0.1, 0.05} at p = 0.9 keeps {0, 1} (0.95 > 0.9 leaves 2 out);
    // {0.95, 0.05} at p = 0.9 keeps only the top token although its mass alone exceeds p
    for (auto [probsIn, P, keep] : std::vector<std::tuple<std::vector<double>, float, int>>{ { {0.6, 0.25, 0.1, 0.05}, 0.9f, 2 }, { {0.05, 0.95}, 0.9f, 1 } }) {
        int vocab = (int)probsIn.size(), rows = 40;
        std::vector<float> lg(rows * vocab), u(rows), probs(rows, NAN), scratch(rows * vocab); std::vector<int> tok(rows, -7);
        for (int r = 0; r < rows; r++) { u[r] = (r + 0.5f) / rows; for (int j = 0; j < vocab; j++) lg[r * vocab + j] = (float)std::log(probsIn[j]); }
        launch({ (unsigned)rows, 1, 1 }, { 256, 1, 1 }, [&] { sp::fbd_sample(lg.data(), rows, vocab, -1, 1.f, P, u.data(), tok.data(), probs.data(), scratch.data()); });
        std::vector<int> order(vocab); std::iota(order.begin(), order.end(), 0);
        std::sort(order.begin(), order.end(), [&](int a, int b) { return probsIn[a] > probsIn[b]; });
        double total = 0; for (int k = 0; k < keep; k++) total += probsIn[order[k]];
        int bad = 0;
        for (int r = 0; r < rows; r++) {
            double acc = 0; int expect = order[keep - 1];
            for (int k = 0; k < keep; k++) { acc += probsIn[order[k]] / total; if (u[r] < acc) { expect = order[k]; break; } }
            bad += tok[r] != expect || std::fabs(probs[r] - probsIn[expect] / total) > 1e-5;
        }
        printf("  nucleus hand-made (keep %d): %d/%d draws differ\n", keep, bad, rows); fails += bad != 0;
    }
    // rotary, embedding, gelu, adamw
    if (!onlySampling) {
        int rows = 13, heads = 3, hd = 10, half = 5, stride = 3 * heads * hd + 1, maxPos = 20;
        auto x = rnd(rows * stride), cs = rnd(maxPos * half), sn = rnd(maxPos * half);
        std::vector<int> pos(rows); for (int r = 0; r < rows; r++) pos[r] = (r * 7) % maxPos;
        for (int inv = 0; inv < 2; inv++) {
            std::vector<double> e(x.begin(), x.end()); float sign = inv ? -1.f : 1.f;
            for (int r = 0; r < rows; r++) for (int h = 0; h < heads; h++) for (int i = 0; i < half; i++) {
                int b = r * stride + h * hd; double c = cs[pos[r]*half+i], s = sign * sn[pos[r]*half+i], x1 = x[b+i], x2 = x[b+half+i];
                e[b+i] = x1*c - x2*s; e[b+half+i] = x2*c + x1*s; }
            auto y = x;
            launch({ 4, 1, 1 }, { 32, 1, 1 }, [&] { nm::fbd_rotary(y.data(), rows, stride, heads, hd, pos.data(), cs.data(), sn.data(), sign); });
            check(inv ? "rotary inverse" : "rotary", y, e);
        }
        int vocab = 11, dim = 40, n = 30; auto table = rnd(vocab * dim), dout = rnd(n * dim); std::vector<int> ids(n), bad(1, 0);
        for (int r = 0; r < n; r++) ids[r] = (r * 5 + 3) % vocab;
        std::vector<float> out(n * dim, NAN), dt(vocab * dim, 0.f); std::vector<double> eo(n * dim), edt(vocab * dim, 0);
        for (int r = 0; r < n; r++) for (int c = 0; c < dim; c++) { eo[r*dim+c] = table[ids[r]*dim+c]; edt[ids[r]*dim+c] += dout[r*dim+c]; }
        launch({ 7, 1, 1 }, { 64, 1, 1 }, [&] { nm::fbd_embedding_fwd(ids.data(), table.data(), out.data(), n, dim, vocab, bad.data()); });
        launch({ 7, 1, 1 }, { 64, 1, 1 }, [&] { nm::fbd_embedding_bwd(ids.data(), dout.data(), dt.data(), n, dim, vocab); });
        check("embedding fwd", out, eo); check("embedding bwd", dt, edt);
        int m = 5000; auto xv = rnd(m, 4), dy = rnd(m); std::vector<float> gy(m, NAN), gd(m, NAN); std::vector<double> egy(m), egd(m);
        for (int i = 0; i < m; i++) { double v = xv[i], t = std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v));
            egy[i] = 0.5 * v * (1 + t); egd[i] = dy[i] * (0.5 * (1 + t) + 0.5 * v * (1 - t * t) * 0.7978845608028654 * (1 + 3 * 0.044715 * v * v)); }
        launch({ 8, 1, 1 }, { 256, 1, 1 }, [&] { ew::fbd_gelu_fwd(xv.data(), gy.data(), m); ew::fbd_gelu_bwd(xv.data(), dy.data(), gd.data(), m); });
        check("gelu fwd", gy, egy); check("gelu bwd", gd, egd);
        auto pa = rnd(m), ga = rnd(m), ma = rnd(m, 0.1f), va = rnd(m, 0.01f); for (auto& v : va) v = std::fabs(v);
        float lr = 3e-4f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.01f, gs = 0.5f; int step = 3;
        double bc1 = 1 - std::pow(b1, step), bc2 = 1 - std::pow(b2, step);
        std::vector<double> ep(m), em(m), evv(m);
        for (int i = 0; i < m; i++) { double g = ga[i] * gs; em[i] = b1 * ma[i] + (1 - b1) * g; evv[i] = b2 * va[i] + (1 - b2) * g * g;
            ep[i] = pa[i] * (1 - lr * wd) - lr / bc1 * em[i] / (std::sqrt(evv[i]) / std::sqrt(bc2) + eps); }
        launch({ 8, 1, 1 }, { 256, 1, 1 }, [&] { ew::fbd_adamw(pa.data(), ga.data(), ma.data(), va.data(), b1, b2, eps, 1 - lr * wd, lr / (float)bc1, (float)std::sqrt(bc2), gs, m); });
        check("adamw param", pa, ep); check("adamw m", ma, em); check("adamw v", va, evv);
        // device-resident step: Σg² reduced on the device, clip factor and bf16 weight copy inside the AdamW pass
        {
            auto p2 = rnd(m), g2 = rnd(m, 3), m2 = rnd(m, 0.1f), v2 = rnd(m, 0.01f); for (auto& v : v2) v = std::fabs(v);
            auto p0 = p2, m0 = m2, v0 = v2;
            std::vector<double> partials(64, NAN); std::vector<double> sum(2, NAN); std::vector<ew::u16> p16(m, 0xffff);
            double ss = 0; for (float g : g2) ss += (double)g * g;
            std::vector<float> ema(m, 0.25f); float emaDecay = 0.9f;
            float maxNorm = 1.5f; double clip = std::min(1.0, maxNorm / std::sqrt(ss));
            launch({ 8, 1, 1 }, { 256, 1, 1 }, [&] { ew::fbd_reduce_sum(g2.data(), m, 1, partials.data()); });
            launch({ 1, 1, 1 }, { 256, 1, 1 }, [&] { ew::fbd_sum_partials(partials.data(), 8, sum.data() + 1); });
            check("device sum of squares", { (float)sum[1] }, { ss }, 1e-6);
            if (sum[1] != ss && std::fabs(sum[1] - ss) > 1e-12 * ss) { printf("FAIL device sum of squares kept in double: %.17g vs %.17g\n", sum[1], ss); fails++; }
            launch({ 8, 1, 1 }, { 256, 1, 1 }, [&] { ew::fbd_adamw_dev(p2.data(), p16.data(), g2.data(), m2.data(), v2.data(), b1, b2, eps, 1 - lr * wd, lr / (float)bc1, (float)std::sqrt(bc2), gs, sum.data() + 1, maxNorm, ema.data(), emaDecay, m); });
            std::vector<double> ep2(m), em2(m), ev2(m), e16(m); std::vector<float> got16(m);
            for (int i = 0; i < m; i++) { double g = g2[i] * gs * clip; em2[i] = b1 * m0[i] + (1 - b1) * g; ev2[i] = b2 * v0[i] + (1 - b2) * g * g;
                ep2[i] = p0[i] * (1 - lr * wd) - lr / bc1 * em2[i] / (std::sqrt(ev2[i]) / std::sqrt(bc2) + eps);
                uint32_t u = (uint32_t)p16[i] << 16; float f; std::memcpy(&f, &u, 4); got16[i] = f; e16[i] = p2[i]; }
            std::vector<double> eEma(m); for (int i = 0; i < m; i++) eEma[i] = 0.9 * 0.25 + 0.1 * ep2[i];
            check("adamw clipped ema", ema, eEma);
            check("adamw clipped param", p2, ep2); check("adamw clipped m", m2, em2); check("adamw clipped v", v2, ev2);
            check("adamw bf16 weight copy", got16, e16, 4e-3);   // round to nearest: |Δ| ≤ 2^-9 relative
            g2[17] = NAN; auto keep = p2;
            launch({ 8, 1, 1 }, { 256, 1, 1 }, [&] { ew::fbd_reduce_sum(g2.data(), m, 1, partials.data()); });
            launch({ 1, 1, 1 }, { 256, 1, 1 }, [&] { ew::fbd_sum_partials(partials.data(), 8, sum.data()); });
            launch({ 8, 1, 1 }, { 256, 1, 1 }, [&] { ew::fbd_adamw_dev(p2.data(), nullptr, g2.data(), m2.data(), v2.data(), b1, b2, eps, 1 - lr * wd, lr / (float)bc1, (float)std::sqrt(bc2), gs, sum.data(), maxNorm, ema.data(), emaDecay, m); });
            std::vector<double> emaKeep(eEma);   // the EMA is left alone too
            std::vector<double> ekeep(keep.begin(), keep.end());
            check("adamw non-finite norm: no update", p2, ekeep, 1e-12);
            check("adamw non-finite norm: EMA unchanged", ema, emaKeep);
        }
    }
    printf("%s\n", fails ? "FAILURES" : "ALL OK");
    return fails;
}
