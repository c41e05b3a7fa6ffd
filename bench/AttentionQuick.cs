using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using FastBlockDiff.Engine;
using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Bench;

/// <summary>Allowed query-key pairs of a mask, the FLOP count every attention result here is credited with.</summary>
public static class AttentionCounts
{
    /// <summary>Σ_i |{j : Allowed(i, j)}| for one (batch, head).</summary>
    public static long Pairs(MaskKind kind, int seqLen, int blockSize)
    {
        long total = 0;
        for (int i = 0; i < seqLen; i++)
        {
            CpuAttention.KeyRanges(kind, seqLen, blockSize, i, out int a0, out int a1, out int b0, out int b1);
            total += Math.Max(0, a1 - a0) + Math.Max(0, b1 - b0);
        }
        return total;
    }

    public static double ForwardFlops(AttentionShape s) => 4.0 * s.HeadDim * Pairs(s.Mask, s.SeqLen, s.BlockSize) * s.Batch * s.Heads;
    public static double BackwardFlops(AttentionShape s) => 2.5 * ForwardFlops(s);
}

/// <summary>
/// `bench attention-quick [--backend cpu[,cuda,...]] [--L 256,1024] [--Lp 4,16] [--B 1] [--H 4] [--d 64]
/// [--cache 256,1024,4096] [--dtype fp32] [--no-dense] [--peak 1] [--budget SECONDS] [--out FILE]`:
/// BD3 training attention forward / backward / forward+backward over 2L tokens, token-causal forward over L tokens,
/// and block decode (L' queries against a cache of each length), median of ≥ 5 runs after warm-up. On the CPU backend
/// every BD3 and causal shape is also run by <see cref="DenseMaskedAttention"/> (same backend, no tile skipping),
/// alternating call by call with ours, and the outputs are compared. On the CPU backend (unless `--peak 0`) the
/// machine's FMA peak is measured first (<see cref="FmaPeakGflops"/>) and every line also says which share of it
/// the attention reaches.
/// </summary>
public static class AttentionQuick
{
    public static int Run(string[] args)
    {
        var o = new QuickOptions(args, defaults: new() { ["L"] = "256,1024", ["Lp"] = "4,16", ["B"] = "1", ["H"] = "4", ["d"] = "64", ["cache"] = "256,1024,4096" });
        var doc = BenchDoc.ForThisRun("attention-quick", args,
            "median wall time of >= 5 calls (more while under the budget) after warm-up; ours and the dense peer alternate call by call; fwd_bwd = median(fwd) + median(bwd)");
        foreach (var backend in o.StartedBackends())
        {
            Console.WriteLine($"backend {backend.Name}: {backend.Description}");
            string ours = "fastblockdiff-" + backend.Name;
            bool dense = !o.Flag("no-dense") && backend is CpuBackend;
            double peak = backend is CpuBackend && o.Int("peak", 1) != 0 ? FmaPeakGflops() : double.NaN;
            if (!double.IsNaN(peak))
                Console.WriteLine($"FMA peak {peak:F1} GFLOP/s on {Environment.ProcessorCount} threads (independent {(Vector512.IsHardwareAccelerated ? 512 : 256)}-bit FMA chains, no memory traffic)");
            int B = o.Ints("B")[0], H = o.Ints("H")[0], d = o.Ints("d")[0];
            Console.WriteLine($"{"suite",-20} {"L",6} {"Lp",4} {"ours ms",10} {"GFLOP/s",8} {"%peak",6} {"dense ms",10} {"GFLOP/s",8} {"dense/ours",10} {"max|Δ|",9}");
            foreach (int L in o.Ints("L"))
            foreach (int lp in o.Ints("Lp"))
            {
                if (L % lp != 0) continue;
                var shape = new AttentionShape(B, H, d, 2 * L, MaskKind.Bd3, lp);
                RunTraining(doc, o, backend, ours, dense, peak, "attn_bd3", shape, L, lp);
            }
            foreach (int L in o.Ints("L"))
                RunTraining(doc, o, backend, ours, dense, peak, "attn_causal", new AttentionShape(B, H, d, L, MaskKind.Causal, 1), L, 1);
            foreach (int lp in o.Ints("Lp"))
            foreach (int cache in o.Ints("cache"))
                RunDecode(doc, o, backend, ours, new DecodeShape(B, H, d, lp, cache, cache));
        }
        o.WriteDoc(doc, "attention");
        return 0;
    }

    static FloatView Random(IBackend b, int n, int seed, float amp = 1f)
    {
        var rng = new Random(seed);
        var host = new float[n];
        for (int i = 0; i < n; i++) host[i] = amp * (rng.NextSingle() * 2 - 1);
        var v = b.AllocFloat(n);
        b.Upload(v, host);
        return v;
    }

    static void RunTraining(BenchDoc doc, QuickOptions o, IBackend b, string ours, bool dense, double peak, string suite, AttentionShape s, int L, int lp)
    {
        int rows = s.Batch * s.SeqLen;
        var qkv = Random(b, rows * s.QkvRowStride, 1);
        var dOut = Random(b, rows * s.ModelDim, 2);
        var outp = b.AllocFloat(rows * s.ModelDim); var lse = b.AllocFloat(rows * s.Heads); var dqkv = b.AllocFloat(rows * s.QkvRowStride);
        var fns = new List<Action>
        {
            () => { b.AttentionForward(s, qkv, outp, lse); b.Synchronize(); },
            () => { b.AttentionBackward(s, qkv, outp, lse, dOut, dqkv); b.Synchronize(); },
        };
        DenseMaskedAttention? peer = null;
        FloatView pOut = default, pLse = default, pDq = default;
        double maxDiff = double.NaN;
        string note = "";
        if (dense)
        {
            try
            {
                peer = new DenseMaskedAttention(b, s);
                pOut = b.AllocFloat(rows * s.ModelDim); pLse = b.AllocFloat(rows * s.Heads); pDq = b.AllocFloat(rows * s.QkvRowStride);
                var pp = peer;
                fns.Add(() => pp.Forward(qkv, pOut, pLse));
                fns.Add(() => pp.Backward(qkv, pOut, pLse, dOut, pDq));
            }
            catch (Exception e) when (e is OutOfMemoryException or ArgumentException) { note = $"dense peer skipped: {e.Message}"; peer = null; }
        }
        var times = QuickTimer.Time(fns, minRuns: o.MinRuns, budgetSeconds: o.Budget);
        if (peer != null)
        {
            // the last calls of both left their outputs and gradients: compare them
            var a = new float[rows * s.ModelDim]; var c = new float[a.Length];
            b.Download(outp, a); b.Download(pOut, c);
            maxDiff = a.Zip(c, (x, y) => (double)Math.Abs(x - y)).Max();
            var ga = new float[rows * s.QkvRowStride]; var gc = new float[ga.Length];
            b.Download(dqkv, ga); b.Download(pDq, gc);
            maxDiff = Math.Max(maxDiff, ga.Zip(gc, (x, y) => (double)Math.Abs(x - y)).Max());
            peer.Dispose();
        }
        double fwdF = AttentionCounts.ForwardFlops(s), bwdF = AttentionCounts.BackwardFlops(s);
        string dtype = o.Dtype;
        var shape = BenchResult.MakeShape(s.Batch, s.Heads, L, lp, s.HeadDim, dtype);
        void Add(string impl, string sfx, double sec, double flops, int runs, string? n = null) => doc.Results.Add(new BenchResult
        {
            Suite = $"{suite}_{sfx}", Impl = impl, Backend = b.Name, Shape = new(shape), Ms = Math.Round(sec * 1e3, 4),
            Tflops = Math.Round(flops / sec / 1e12, 6), Runs = runs, Note = n,
        });
        double of = QuickTimer.Median(times[0]), ob = QuickTimer.Median(times[1]);
        long pairs = AttentionCounts.Pairs(s.Mask, s.SeqLen, s.BlockSize);
        string density = $"allowed pairs {pairs} per head = {100.0 * pairs / ((double)s.SeqLen * s.SeqLen):F1}% of the {s.SeqLen}² square"
            + (double.IsNaN(peak) ? "" : $"; FMA peak of this machine {peak:F1} GFLOP/s measured in the same run");
        Add(ours, "fwd", of, fwdF, times[0].Count, density);
        Add(ours, "bwd", ob, bwdF, times[1].Count, density);
        Add(ours, "fwd_bwd", of + ob, fwdF + bwdF, times[0].Count, "median(fwd) + median(bwd); " + density);
        double df = double.NaN, db = double.NaN;
        if (peer != null)
        {
            df = QuickTimer.Median(times[2]); db = QuickTimer.Median(times[3]);
            string n = $"dense masked GEMM→softmax→GEMM on the same backend; max |Δ| vs ours (out and dqkv) {maxDiff:E2}";
            Add("dense-masked-" + b.Name, "fwd", df, fwdF, times[2].Count, n);
            Add("dense-masked-" + b.Name, "bwd", db, bwdF, times[3].Count, n);
            Add("dense-masked-" + b.Name, "fwd_bwd", df + db, fwdF + bwdF, times[2].Count, "median(fwd) + median(bwd); " + n);
        }
        foreach (var (sfx, ot, dt, f) in new[] { ("fwd", of, df, fwdF), ("bwd", ob, db, bwdF), ("fwd_bwd", of + ob, df + db, fwdF + bwdF) })
            Console.WriteLine($"{suite + "_" + sfx,-20} {L,6} {lp,4} {ot * 1e3,10:F2} {f / ot / 1e9,8:F1} {(double.IsNaN(peak) ? "" : (100 * f / ot / 1e9 / peak).ToString("F1")),6} {(double.IsNaN(dt) ? "n/a" : (dt * 1e3).ToString("F2")),10} {(double.IsNaN(dt) ? "" : (f / dt / 1e9).ToString("F1")),8} {(double.IsNaN(dt) ? "" : (dt / ot).ToString("F2")),10} {(double.IsNaN(maxDiff) ? "" : maxDiff.ToString("E1")),9}");
        if (note.Length > 0) Console.WriteLine("  " + note);
    }

    /// <summary>The machine's FMA peak in GFLOP/s (<see cref="FmaPeak"/> on every processor): the best of five runs of about 0.1 s after a warm-up.</summary>
    public static double FmaPeakGflops()
    {
        FmaPeak.Measure(0, 0.05);
        return Enumerable.Range(0, 5).Max(_ => FmaPeak.Measure(0, 0.1));
    }

    static void RunDecode(BenchDoc doc, QuickOptions o, IBackend b, string ours, DecodeShape s)
    {
        int D = s.ModelDim;
        var qkv = Random(b, s.Batch * s.BlockLen * 3 * D, 3);
        var k = Random(b, s.Batch * s.CacheCapacity * D, 4);
        var v = Random(b, s.Batch * s.CacheCapacity * D, 5);
        var outp = b.AllocFloat(s.Batch * s.BlockLen * D);
        var t = QuickTimer.Time([() => { b.DecodeAttention(s, qkv, k, v, outp); b.Synchronize(); }], minRuns: o.MinRuns, budgetSeconds: o.Budget / 2);
        double sec = QuickTimer.Median(t[0]);
        double flops = 4.0 * s.HeadDim * (double)s.BlockLen * (s.CacheLen + s.BlockLen) * s.Batch * s.Heads;
        doc.Results.Add(new BenchResult
        {
            Suite = "attn_decode", Impl = ours, Backend = b.Name,
            Shape = BenchResult.MakeShape(s.Batch, s.Heads, s.CacheLen, s.BlockLen, s.HeadDim, o.Dtype, ("cache", s.CacheLen)),
            Ms = Math.Round(sec * 1e3, 5), Tflops = Math.Round(flops / sec / 1e12, 6), Runs = t[0].Count,
            Note = "L = cache length; L' queries see the cache and their own block",
        });
        Console.WriteLine($"{"attn_decode",-18} {s.CacheLen,6} {s.BlockLen,4} {sec * 1e3,10:F3} {flops / sec / 1e12,8:F4}   (cache {s.CacheLen})");
    }
}
