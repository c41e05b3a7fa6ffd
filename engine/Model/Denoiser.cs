using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine.Model;

/// <summary>
/// The bd3lms DiT denoiser (DESIGN.md section 5) with a hand-written backward. Weights and gradients are flat
/// buffers described by <see cref="Params"/>; every op goes through <see cref="IBackend"/>.
/// </summary>
public sealed class Denoiser : IDisposable
{
    public ModelConfig Config { get; }
    public IBackend Backend { get; }
    public ParameterSet Params { get; }
    public FloatView Weights { get; }
    public FloatView Grads { get; }
    public RotaryTables Rotary { get; }

    readonly IBackend _b;
    readonly OwnedBuffers _buffers;
    readonly int _d, _layers;
    // Conditioning is constant (no time conditioning): c = SiLU(sigma_map(0)); everything derived from it is
    // recomputed once per weight update by PrepareConditioning, not per token.
    readonly FloatView _freq, _h0, _a0, _h1, _cond, _mods, _onePlus, _effW, _dMods, _dEffW, _dCond, _dTmp;
    // Set only after every derived constant is written, under _prepareLock: concurrent first calls compute them once.
    volatile bool _prepared;
    readonly object _prepareLock = new();

    // offsets inside the 6D modulation of a block: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp
    const int ShiftMsa = 0, ScaleMsa = 1, GateMsa = 2, ShiftMlp = 3, ScaleMlp = 4, GateMlp = 5;

    public Denoiser(IBackend backend, ModelConfig config)
    {
        config.Validate();
        Config = config; Backend = _b = backend; _d = config.HiddenDim; _layers = config.Layers;
        Params = BuildParameterSet(config);
        var o = _buffers = new OwnedBuffers(backend);
        Weights = o.Float("weights", Params.Count);
        Grads = o.Float("gradients", Params.Count);
        backend.KeepBf16Copy(Weights);   // bf16 backends: GEMMs read a persistent bf16 copy that AdamW keeps current
        Rotary = new RotaryTables(backend, config.HeadDim, config.ModelLength);

        var freq = new float[ModelConfig.FrequencyDim];
        for (int i = 0; i < freq.Length / 2; i++) freq[i] = 1f; // [cos(0·f), sin(0·f)] = [1…1, 0…0]
        _freq = o.Float("sigma frequencies", freq.Length); backend.Upload(_freq, freq);
        long cd = config.CondDim, modLen = (long)_layers * 6 * _d + 2L * _d;
        _h0 = o.Float("cond h0", cd); _a0 = o.Float("cond a0", cd); _h1 = o.Float("cond h1", cd); _cond = o.Float("cond", cd);
        _mods = o.Float("modulations", modLen); _onePlus = o.Float("1 + scale", modLen);
        _effW = o.Float("effective norm weights", 2L * _layers + 1, _d);
        _dMods = o.Float("d modulations", modLen); _dEffW = o.Float("d effective norm weights", 2L * _layers + 1, _d);
        _dCond = o.Float("d cond", cd); _dTmp = o.Float("d cond scratch", cd);
    }

    /// <summary>Frees the weights, gradients and conditioning buffers (the backend stays with its owner).</summary>
    public void Dispose()
    {
        Rotary.Dispose();
        _buffers.Dispose();
    }

    public static ParameterSet BuildParameterSet(ModelConfig c)
    {
        var p = new ParameterSet();
        int d = c.HiddenDim;
        p.Add("vocab_embed.embedding", c.VocabSize, d);
        p.Add("sigma_map.mlp.0.weight", c.CondDim, ModelConfig.FrequencyDim);
        p.Add("sigma_map.mlp.0.bias", c.CondDim);
        p.Add("sigma_map.mlp.2.weight", c.CondDim, c.CondDim);
        p.Add("sigma_map.mlp.2.bias", c.CondDim);
        for (int l = 0; l < c.Layers; l++)
        {
            string b = $"blocks.{l}.";
            p.Add(b + "norm1.weight", d);
            p.Add(b + "attn_qkv.weight", 3 * d, d);
            p.Add(b + "attn_out.weight", d, d);
            p.Add(b + "norm2.weight", d);
            p.Add(b + "mlp.0.weight", c.MlpDim, d);
            p.Add(b + "mlp.0.bias", c.MlpDim);
            p.Add(b + "mlp.2.weight", d, c.MlpDim);
            p.Add(b + "mlp.2.bias", d);
            p.Add(b + "adaLN_modulation.weight", 6 * d, c.CondDim);
            p.Add(b + "adaLN_modulation.bias", 6 * d);
        }
        p.Add("output_layer.norm_final.weight", d);
        p.Add("output_layer.linear.weight", c.VocabSize, d);
        p.Add("output_layer.linear.bias", c.VocabSize);
        p.Add("output_layer.adaLN_modulation.weight", 2 * d, c.CondDim);
        p.Add("output_layer.adaLN_modulation.bias", 2 * d);
        return p;
    }

    /// <summary>
    /// bd3lms initialisation: PyTorch Linear defaults, embedding U(±1/√D), LayerNorm weights 1, and the adaLN
    /// modulations and output projection zeroed (each block starts as the identity, logits start uniform).
    /// With <paramref name="zeroInit"/> false everything is random, which tests use so that no gradient is trivially zero.
    /// </summary>
    public void Initialize(int seed, bool zeroInit = true)
    {
        var rng = new Random(seed);
        var w = new float[Params.Count];
        foreach (var p in Params.Infos)
        {
            var span = w.AsSpan(p.Offset, p.Length);
            bool isNorm = p.Name.Contains("norm");
            bool zero = zeroInit && (p.Name.Contains("adaLN_modulation") || p.Name.StartsWith("output_layer.linear"));
            if (zero) continue;
            if (isNorm)
            {
                for (int i = 0; i < span.Length; i++) span[i] = zeroInit ? 1f : 1f + 0.2f * (float)(rng.NextDouble() * 2 - 1);
                continue;
            }
            int fanIn = p.Name == "vocab_embed.embedding" ? _d
                : p.Shape.Length == 2 ? p.Shape[1]
                : FanInOfBias(p.Name);
            float bound = 1f / MathF.Sqrt(fanIn);
            for (int i = 0; i < span.Length; i++) span[i] = bound * (float)(rng.NextDouble() * 2 - 1);
        }
        LoadWeights(w);
    }

    int FanInOfBias(string name) => Params[name[..^"bias".Length] + "weight"].Shape[1];

    /// <summary>Replaces all weights (flat, in <see cref="Params"/> order).</summary>
    public void LoadWeights(ReadOnlySpan<float> flat)
    {
        if (flat.Length != Params.Count) throw new ArgumentException($"expected {Params.Count} weights, got {flat.Length}");
        _b.Upload(Weights, flat);
        InvalidateConditioning();
    }

    public float[] DownloadWeights()
    {
        var w = new float[Params.Count];
        _b.Download(Weights, w);
        return w;
    }

    /// <summary>Must be called after the weights change (the optimiser does) so derived constants are recomputed.</summary>
    public void InvalidateConditioning()
    {
        lock (_prepareLock) _prepared = false;
    }

    FloatView W(string name) => ParameterSet.View(Weights, Params[name]);
    FloatView G(string name) => ParameterSet.View(Grads, Params[name]);
    FloatView Mod(int layer, int chunk) => _mods.Slice(layer * 6 * _d + chunk * _d, _d);
    FloatView OnePlus(int layer, int chunk) => _onePlus.Slice(layer * 6 * _d + chunk * _d, _d);
    FloatView DMod(int layer, int chunk) => _dMods.Slice(layer * 6 * _d + chunk * _d, _d);
    FloatView FinalMod(int chunk) => _mods.Slice(_layers * 6 * _d + chunk * _d, _d);
    FloatView FinalOnePlus(int chunk) => _onePlus.Slice(_layers * 6 * _d + chunk * _d, _d);
    FloatView FinalDMod(int chunk) => _dMods.Slice(_layers * 6 * _d + chunk * _d, _d);
    FloatView EffW(int i) => _effW.Slice(i * _d, _d);    // 2l: norm1 of layer l, 2l+1: norm2, 2L: final norm
    FloatView DEffW(int i) => _dEffW.Slice(i * _d, _d);

    /// <summary>y[rows, out] = x[rows, in]·Wᵀ (+ bias) for a PyTorch-layout weight [out, in].</summary>
    void Linear(FloatView x, string weight, string? bias, FloatView y, int rows, int inDim, int outDim) =>
        _b.Gemm(false, true, rows, outDim, inDim, 1f, x, inDim, W(weight), inDim, 0f, y, outDim, bias is null ? null : W(bias));

    /// <summary>dW += dyᵀ·x, db += Σ dy, and dx (+)= dy·W.</summary>
    void LinearBackward(FloatView x, FloatView dy, string weight, string? bias, FloatView? dx, int rows, int inDim, int outDim, bool accumulateDx = false)
    {
        _b.LinearWeightGradients(dy, x, G(weight), bias is null ? null : G(bias), rows, inDim, outDim);
        if (dx is { } d) LinearBackwardInput(dy, weight, d, rows, inDim, outDim, accumulateDx);
    }

    /// <summary>dx (+)= dy·W alone: the input gradient of a linear layer whose weight gradients were taken earlier.</summary>
    void LinearBackwardInput(FloatView dy, string weight, FloatView dx, int rows, int inDim, int outDim, bool accumulate) =>
        _b.Gemm(false, false, rows, inDim, outDim, 1f, dy, outDim, W(weight), inDim, accumulate ? 1f : 0f, dx, inDim);

    void PrepareConditioning()
    {
        if (_prepared) return;
        lock (_prepareLock)
        {
            if (_prepared) return;
            ComputeConditioning();
            _prepared = true;
        }
    }

    void ComputeConditioning()
    {
        int cd = Config.CondDim;
        Linear(_freq, "sigma_map.mlp.0.weight", "sigma_map.mlp.0.bias", _h0, 1, ModelConfig.FrequencyDim, cd);
        _b.SiluForward(_h0, _a0);
        Linear(_a0, "sigma_map.mlp.2.weight", "sigma_map.mlp.2.bias", _h1, 1, cd, cd);
        _b.SiluForward(_h1, _cond);
        for (int l = 0; l < _layers; l++)
        {
            string p = $"blocks.{l}.";
            Linear(_cond, p + "adaLN_modulation.weight", p + "adaLN_modulation.bias", _mods.Slice(l * 6 * _d, 6 * _d), 1, cd, 6 * _d);
        }
        Linear(_cond, "output_layer.adaLN_modulation.weight", "output_layer.adaLN_modulation.bias", _mods.Slice(_layers * 6 * _d, 2 * _d), 1, cd, 2 * _d);
        // modulate(LN(x)·w, shift, scale) = LN(x)·(w⊙(1+scale)) + shift: a LayerNorm with an effective affine.
        _b.Copy(_onePlus, _mods);
        _b.ScaleShift(_onePlus, 1f, 1f);
        for (int l = 0; l < _layers; l++)
        {
            _b.Mul(EffW(2 * l), W($"blocks.{l}.norm1.weight"), OnePlus(l, ScaleMsa), false);
            _b.Mul(EffW(2 * l + 1), W($"blocks.{l}.norm2.weight"), OnePlus(l, ScaleMlp), false);
        }
        _b.Mul(EffW(2 * _layers), W("output_layer.norm_final.weight"), FinalOnePlus(1), false);
    }

    static ulong DropSeed(ulong seed, int layer, int which) => Dropout.Mix(seed, (ulong)(layer * 2 + which));

    /// <summary>
    /// Runs the transformer body over ws.Ids / ws.Positions (filled by the caller) with the given attention mask.
    /// With dropout &gt; 0 the residual branches are dropped using masks derived from <paramref name="seed"/>.
    /// </summary>
    public void Forward(DenoiserWorkspace ws, AttentionShape shape, float dropout = 0f, ulong seed = 0)
    {
        if (shape.Batch * shape.SeqLen != ws.Rows) throw new ArgumentException($"attention shape {shape} does not match workspace rows {ws.Rows}");
        shape.Validate();
        PrepareConditioning();
        int n = ws.Rows, d = _d;
        _b.EmbeddingForward(ws.Ids, W("vocab_embed.embedding"), ws.Xs[0], n, d);
        for (int l = 0; l < _layers; l++)
        {
            var a = ws.Layer[l];
            string p = $"blocks.{l}.";
            _b.LayerNormForward(ws.Xs[l], EffW(2 * l), Mod(l, ShiftMsa), a.H1, a.Mean1, a.Rstd1, n, d, 1e-5f);
            Linear(a.H1, p + "attn_qkv.weight", null, a.Qkv, n, d, 3 * d);
            RotateQk(a.Qkv, n, ws.Positions, inverse: false);
            _b.AttentionForward(shape, a.Qkv, a.Attn, a.Lse);
            Linear(a.Attn, p + "attn_out.weight", null, a.YAttn, n, d, d);
            _b.Copy(a.XMid, ws.Xs[l]);
            _b.ResidualGatedForward(a.XMid, a.YAttn, Mod(l, GateMsa), n, d, dropout, DropSeed(seed, l, 0));
            MlpForward(l, a, n);
            _b.Copy(ws.Xs[l + 1], a.XMid);
            _b.ResidualGatedForward(ws.Xs[l + 1], a.YMlp, Mod(l, GateMlp), n, d, dropout, DropSeed(seed, l, 1));
        }
    }

    void MlpForward(int l, DenoiserWorkspace.LayerActivations a, int n)
    {
        string p = $"blocks.{l}.";
        _b.LayerNormForward(a.XMid, EffW(2 * l + 1), Mod(l, ShiftMlp), a.H2, a.Mean2, a.Rstd2, n, _d, 1e-5f);
        _b.GemmBiasGelu(false, true, n, Config.MlpDim, _d, a.H2, _d, W(p + "mlp.0.weight"), _d, W(p + "mlp.0.bias"), a.U, a.G);
        Linear(a.G, p + "mlp.2.weight", p + "mlp.2.bias", a.YMlp, n, Config.MlpDim, _d);
    }

    void RotateQk(FloatView qkv, int rows, IntView positions, bool inverse)
    {
        int hd = Config.HeadDim, h = Config.Heads;
        var table = Rotary.Current;
        _b.Rotary(qkv, rows, 3 * _d, h, hd, positions, table.Cos, table.Sin, inverse);
        _b.Rotary(qkv.Slice(_d), rows, 3 * _d, h, hd, positions, table.Cos, table.Sin, inverse);
    }

    /// <summary>
    /// Output layer over rows [rowStart, rowStart+rowCount) of every sequence; returns logits [Batch·rowCount, Vocab].
    /// </summary>
    public FloatView Head(DenoiserWorkspace ws, int rowStart, int rowCount)
    {
        PrepareConditioning();
        ws.PrepareHead(rowStart, rowCount);
        int d = _d, r = ws.Batch * rowCount;
        var x = ws.Xs[_layers];
        var input = ws.HeadInput.Slice(0, r * d);
        if (rowStart == 0 && rowCount == ws.SeqLen) _b.Copy(input, x);
        else
            for (int s = 0; s < ws.Batch; s++)
                _b.CopyRows(input.Slice(s * rowCount * d, rowCount * d), d, x.Slice((s * ws.SeqLen + rowStart) * d, rowCount * d), d, rowCount, d);
        _b.LayerNormForward(input, EffW(2 * _layers), FinalMod(0), ws.HeadNorm, ws.HeadMean, ws.HeadRstd, r, d, 1e-5f);
        var logits = ws.Logits.Slice(0, r * Config.VocabSize);
        Linear(ws.HeadNorm.Slice(0, r * d), "output_layer.linear.weight", "output_layer.linear.bias", logits, r, d, Config.VocabSize);
        return logits;
    }

    /// <summary>
    /// Output layer over the given rows of the workspace (indices into its Batch·SeqLen rows, any order): logits
    /// [rows.Length, Vocab], row k for rows[k]. For sampling, which needs only some rows; no backward follows it.
    /// </summary>
    public FloatView HeadRows(DenoiserWorkspace ws, ReadOnlySpan<int> rows)
    {
        PrepareConditioning();
        int d = _d, r = rows.Length;
        ws.EnsureHeadRows(r);
        ws.HeadRowStart = 0; ws.HeadRowCount = 0;
        var x = ws.Xs[_layers];
        var input = ws.HeadInput.Slice(0, r * d);
        for (int k = 0; k < r; k++) _b.Copy(input.Slice(k * d, d), x.Slice(checked(rows[k] * d), d));
        _b.LayerNormForward(input, EffW(2 * _layers), FinalMod(0), ws.HeadNorm, ws.HeadMean, ws.HeadRstd, r, d, 1e-5f);
        var logits = ws.Logits.Slice(0, checked(r * Config.VocabSize));
        Linear(ws.HeadNorm.Slice(0, r * d), "output_layer.linear.weight", "output_layer.linear.bias", logits, r, d, Config.VocabSize);
        return logits;
    }

    /// <summary>
    /// Accumulates parameter gradients into <see cref="Grads"/> from dLogits (ws.Logits overwritten by the loss op)
    /// of the last <see cref="Head"/> call, through the whole network. The caller zeroes Grads once per step.
    /// <paramref name="gradientsDoneFrom"/>, when given, is told a flat offset each time this pass has written its last
    /// gradient at every offset from there to the end of <see cref="Grads"/>: after the output layer, after each block
    /// (last to first; the flat layout puts later layers at higher offsets), and 0 at the end. The data-parallel
    /// all-reduce starts those buckets while the pass goes on.
    /// </summary>
    public void Backward(DenoiserWorkspace ws, AttentionShape shape, float dropout = 0f, ulong seed = 0, Action<int>? gradientsDoneFrom = null)
    {
        int n = ws.Rows, d = _d, md = Config.MlpDim, r = ws.Batch * ws.HeadRowCount;
        var (dx, dh, dqkv, dAttn, dy, du) = ws.Scratch();
        var (dHeadIn, dHeadNorm) = ws.HeadScratch();
        _b.Fill(_dMods, 0f);
        _b.Fill(_dEffW, 0f);

        // output layer
        var dLogits = ws.Logits.Slice(0, r * Config.VocabSize);
        LinearBackward(ws.HeadNorm.Slice(0, r * d), dLogits, "output_layer.linear.weight", "output_layer.linear.bias", dHeadNorm.Slice(0, r * d), r, d, Config.VocabSize);
        _b.Fill(dHeadIn, 0f);
        _b.LayerNormBackward(dHeadNorm.Slice(0, r * d), ws.HeadInput.Slice(0, r * d), EffW(2 * _layers), ws.HeadMean, ws.HeadRstd,
            dHeadIn.Slice(0, r * d), DEffW(2 * _layers), FinalDMod(0), r, d);
        ModulationBackward(_layers);
        gradientsDoneFrom?.Invoke(Params["output_layer.norm_final.weight"].Offset);
        _b.Fill(dx, 0f);
        for (int s = 0; s < ws.Batch; s++)
            _b.CopyRows(dx.Slice((s * ws.SeqLen + ws.HeadRowStart) * d, ws.HeadRowCount * d), d, dHeadIn.Slice(s * ws.HeadRowCount * d, ws.HeadRowCount * d), d, ws.HeadRowCount, d);

        for (int l = _layers - 1; l >= 0; l--)
        {
            var a = ws.Layer[l];
            string p = $"blocks.{l}.";
            // MLP branch: x_out = x_mid + gate_mlp·drop(mlp(modulate(norm2(x_mid))))
            _b.ResidualGatedBackward(dx, a.YMlp, Mod(l, GateMlp), dy, DMod(l, GateMlp), n, d, dropout, DropSeed(seed, l, 1));
            LinearBackward(a.G, dy, p + "mlp.2.weight", p + "mlp.2.bias", null, n, md, d);
            _b.GemmGeluBackward(false, false, n, md, d, dy, d, W(p + "mlp.2.weight"), md, a.U, du);   // du = (dy·W2) ⊙ GELU'(u)
            LinearBackward(a.H2, du, p + "mlp.0.weight", p + "mlp.0.bias", dh, n, d, md);
            _b.LayerNormBackward(dh, a.XMid, EffW(2 * l + 1), a.Mean2, a.Rstd2, dx, DEffW(2 * l + 1), DMod(l, ShiftMlp), n, d);
            // attention branch: x_mid = x_in + gate_msa·drop(attn_out(attn(rot(qkv(modulate(norm1(x_in)))))))
            _b.ResidualGatedBackward(dx, a.YAttn, Mod(l, GateMsa), dy, DMod(l, GateMsa), n, d, dropout, DropSeed(seed, l, 0));
            LinearBackward(a.Attn, dy, p + "attn_out.weight", null, dAttn, n, d, d);
            _b.AttentionBackward(shape, a.Qkv, a.Attn, a.Lse, dAttn, dqkv);
            RotateQk(dqkv, n, ws.Positions, inverse: true);
            LinearBackward(a.H1, dqkv, p + "attn_qkv.weight", null, dh, n, d, 3 * d);
            _b.LayerNormBackward(dh, ws.Xs[l], EffW(2 * l), a.Mean1, a.Rstd1, dx, DEffW(2 * l), DMod(l, ShiftMsa), n, d);
            ModulationBackward(l);
            gradientsDoneFrom?.Invoke(Params[$"blocks.{l}.norm1.weight"].Offset);
        }
        _b.EmbeddingBackward(ws.Ids, dx, G("vocab_embed.embedding"), n, d);
        ConditioningBackward();
        gradientsDoneFrom?.Invoke(0);
    }

    /// <summary>
    /// The gradients of block <paramref name="l"/>'s norm weights and adaLN modulation (l = Layers: the output layer's),
    /// once the block's backward has written its effective-affine and modulation gradients: with them the block's
    /// whole parameter range is final. Its share of d cond is left to <see cref="ConditioningBackward"/>.
    /// </summary>
    void ModulationBackward(int l)
    {
        void NormChain(int eff, string normWeight, FloatView onePlusScale, FloatView dScale)
        {
            _b.Mul(G(normWeight), DEffW(eff), onePlusScale, accumulate: true);
            _b.Mul(dScale, DEffW(eff), W(normWeight), accumulate: true);
        }
        if (l < _layers)
        {
            NormChain(2 * l, $"blocks.{l}.norm1.weight", OnePlus(l, ScaleMsa), DMod(l, ScaleMsa));
            NormChain(2 * l + 1, $"blocks.{l}.norm2.weight", OnePlus(l, ScaleMlp), DMod(l, ScaleMlp));
        }
        else NormChain(2 * _layers, "output_layer.norm_final.weight", FinalOnePlus(1), FinalDMod(1));
        var (p, width) = AdaLn(l);
        LinearBackward(_cond, _dMods.Slice(l * 6 * _d, width), p + "weight", p + "bias", null, 1, Config.CondDim, width);
    }

    /// <summary>The adaLN modulation of block l (l = Layers: the output layer): parameter prefix and width.</summary>
    (string Prefix, int Width) AdaLn(int l) => l < _layers ? ($"blocks.{l}.adaLN_modulation.", 6 * _d) : ("output_layer.adaLN_modulation.", 2 * _d);

    /// <summary>From the modulation gradients back through adaLN (into d cond, in layer order) and sigma_map.</summary>
    void ConditioningBackward()
    {
        int cd = Config.CondDim;
        _b.Fill(_dCond, 0f);
        for (int l = 0; l <= _layers; l++)
        {
            var (p, width) = AdaLn(l);
            LinearBackwardInput(_dMods.Slice(l * 6 * _d, width), p + "weight", _dCond, 1, cd, width, accumulate: true);
        }
        _b.SiluBackward(_h1, _dCond, _dTmp);
        LinearBackward(_a0, _dTmp, "sigma_map.mlp.2.weight", "sigma_map.mlp.2.bias", _dCond, 1, cd, cd);
        _b.SiluBackward(_h0, _dCond, _dTmp);
        LinearBackward(_freq, _dTmp, "sigma_map.mlp.0.weight", "sigma_map.mlp.0.bias", null, 1, ModelConfig.FrequencyDim, cd);
    }

    /// <summary>
    /// Runs one block of ws.Batch × ws.SeqLen tokens against the KV cache: every query sees the cached prefix and
    /// the whole block. With <paramref name="commit"/> the block's keys and values are appended to the cache.
    /// </summary>
    public void ForwardCached(DenoiserWorkspace ws, KvCache cache, bool commit)
    {
        var shape = new DecodeShape(ws.Batch, Config.Heads, Config.HeadDim, ws.SeqLen, cache.Length, cache.Capacity);
        ForwardBlock(ws, (l, a) =>
        {
            _b.DecodeAttention(shape, a.Qkv, cache.K[l], cache.V[l], a.Attn);
            if (commit) cache.Append(l, a.Qkv, ws.SeqLen);
        });
        if (commit) cache.Advance(ws.SeqLen);
    }

    /// <summary>
    /// <see cref="ForwardCached"/> for ws.Batch independent sequences, each with its own single-sequence cache
    /// (of its own length): the dense layers run over all of them at once, attention per sequence. This is how
    /// requests that joined at different times are served in one batch.
    /// </summary>
    public void ForwardCachedEach(DenoiserWorkspace ws, IReadOnlyList<KvCache> caches, bool commit)
    {
        if (caches.Count != ws.Batch) throw new ArgumentException($"{caches.Count} caches for a workspace of {ws.Batch} sequences");
        if (caches.Any(c => c.Batch != 1)) throw new ArgumentException("every cache must hold exactly one sequence");
        int len = ws.SeqLen, d = _d;
        ForwardBlock(ws, (l, a) =>
        {
            for (int s = 0; s < caches.Count; s++)
            {
                var c = caches[s];
                var qkv = a.Qkv.Slice(s * len * 3 * d, len * 3 * d);
                _b.DecodeAttention(new DecodeShape(1, Config.Heads, Config.HeadDim, len, c.Length, c.Capacity), qkv, c.K[l], c.V[l], a.Attn.Slice(s * len * d, len * d));
                if (commit) c.Append(l, qkv, len);
            }
        });
        if (commit) foreach (var c in caches) c.Advance(len);
    }

    /// <summary>The transformer body over a block; <paramref name="attend"/> fills a.Attn from a.Qkv of layer l.</summary>
    void ForwardBlock(DenoiserWorkspace ws, Action<int, DenoiserWorkspace.LayerActivations> attend)
    {
        PrepareConditioning();
        int n = ws.Rows, d = _d;
        _b.EmbeddingForward(ws.Ids, W("vocab_embed.embedding"), ws.Xs[0], n, d);
        for (int l = 0; l < _layers; l++)
        {
            var a = ws.Layer[l];
            string p = $"blocks.{l}.";
            _b.LayerNormForward(ws.Xs[l], EffW(2 * l), Mod(l, ShiftMsa), a.H1, a.Mean1, a.Rstd1, n, d, 1e-5f);
            Linear(a.H1, p + "attn_qkv.weight", null, a.Qkv, n, d, 3 * d);
            RotateQk(a.Qkv, n, ws.Positions, inverse: false);
            attend(l, a);
            Linear(a.Attn, p + "attn_out.weight", null, a.YAttn, n, d, d);
            _b.Copy(a.XMid, ws.Xs[l]);
            _b.ResidualGatedForward(a.XMid, a.YAttn, Mod(l, GateMsa), n, d, 0f, 0);
            MlpForward(l, a, n);
            _b.Copy(ws.Xs[l + 1], a.XMid);
            _b.ResidualGatedForward(ws.Xs[l + 1], a.YMlp, Mod(l, GateMlp), n, d, 0f, 0);
        }
    }
}
