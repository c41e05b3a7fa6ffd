using FastBlockDiff.Kernels;

namespace FastBlockDiff.Bench;

/// <summary>
/// The model-FLOP count the CPU comparison credits a training step, an evaluation forward and a sampled token with,
/// the same for ours and the PyTorch peer (computed from the result's shape, never from what an implementation did):
/// <list type="bullet">
/// <item>matrix parameters of the trunk P = 12·D²·layers (QKV 3D², output D², MLP 8D²); the head D·V. Embedding,
/// adaLN (one vector per sequence), norms, biases and element-wise work are not counted;</item>
/// <item>forward of the BD3 objective per sequence: 2·P·2L (the trunk sees x_noisy ⊕ x_clean) + 2·D·V·L (the head
/// runs on the noisy half) + attention 4·D·pairs·layers, pairs = allowed query–key pairs of the 2L BD3 mask;</item>
/// <item>training step = 3 × the matrix FLOPs of the forward (backward = 2×) + 3.5 × its attention FLOPs (bench/README.md);</item>
/// <item>sampling (approximate): per NFE B·L'·(2P + 2·D·V), plus one head-less pass 2P per committed token; attention
/// against the cache is not counted.</item>
/// </list>
/// </summary>
public static class ModelFlops
{
    public const string Convention =
        "model FLOPs: trunk matrices P = 12·D²·layers, head D·V (embedding, adaLN, norms, biases, element-wise not counted); " +
        "eval forward = B·(2·P·2L + 2·D·V·L + 4·D·pairs·layers), pairs = allowed pairs of the 2L BD3 mask; " +
        "train step = 3 × matrix part + 3.5 × attention part of that forward; sampling ≈ B·(NFE·L'·(2P + 2·D·V) + tokens·2P), attention not counted";

    static double Trunk(int width, int layers) => 12.0 * width * width * layers;

    static (double Matrix, double Attention) Forward(int batch, int width, int layers, int vocab, int length, int blockSize)
    {
        double matrix = batch * (2 * Trunk(width, layers) * 2 * length + 2.0 * width * vocab * length);
        double attention = batch * 4.0 * width * AttentionCounts.Pairs(MaskKind.Bd3, 2 * length, blockSize) * layers;
        return (matrix, attention);
    }

    public static double EvalForward(int batch, int width, int layers, int vocab, int length, int blockSize)
    {
        var (m, a) = Forward(batch, width, layers, vocab, length, blockSize);
        return m + a;
    }

    public static double TrainStep(int batch, int width, int layers, int vocab, int length, int blockSize)
    {
        var (m, a) = Forward(batch, width, layers, vocab, length, blockSize);
        return 3 * m + 3.5 * a;
    }

    public static double Sampling(int batch, int width, int layers, int vocab, int blockSize, int nfe, int tokens) =>
        batch * (nfe * (double)blockSize * (2 * Trunk(width, layers) + 2.0 * width * vocab) + tokens * 2 * Trunk(width, layers));

    /// <summary>
    /// The FLOPs of one call of a result, from its shape: train_step, eval_forward and sample as above, attn_bd3_* on
    /// allowed pairs (bench/README.md), gemm 2·M·N·K; null for other suites or missing keys.
    /// </summary>
    public static double? Of(BenchResult r)
    {
        int? Get(string k) => r.Shape.TryGetValue(k, out var v) && v != null && int.TryParse(v.ToJsonString().Trim('"'), out int x) ? x : null;
        if (r.Suite == "gemm")
            return Get("M") is { } m && Get("N") is { } n && Get("K") is { } k ? 2.0 * m * n * k : null;
        if (r.Suite.StartsWith("attn_bd3_", StringComparison.Ordinal) && Get("B") is { } ab && Get("H") is { } ah && Get("L") is { } al
            && Get("Lp") is { } alp && Get("d") is { } ad)
        {
            double fwd = 4.0 * ad * AttentionCounts.Pairs(MaskKind.Bd3, 2 * al, alp) * ab * ah;
            return r.Suite switch { "attn_bd3_fwd" => fwd, "attn_bd3_bwd" => 2.5 * fwd, "attn_bd3_fwd_bwd" => 3.5 * fwd, _ => null };
        }
        if (Get("B") is not { } b || Get("width") is not { } w || Get("layers") is not { } layers || Get("V") is not { } v
            || Get("L") is not { } l || Get("Lp") is not { } lp) return null;
        return r.Suite switch
        {
            "train_step" => TrainStep(b, w, layers, v, l, lp),
            "eval_forward" => EvalForward(b, w, layers, v, l, lp),
            "sample" when r.Nfe is { } nfe && Get("tokens") is { } tokens => Sampling(b, w, layers, v, lp, nfe, tokens),
            _ => null,
        };
    }
}
