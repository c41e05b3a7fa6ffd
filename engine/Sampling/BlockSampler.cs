using System.Diagnostics;
using FastBlockDiff.Engine.Model;
using FastBlockDiff.Engine.Training;
using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine.Sampling;

/// <summary>
/// Block-by-block generation (DESIGN.md 1.2): each block starts as masks, is denoised in T steps against the
/// KV cache of the clean prefix, and is then committed to the cache. A step whose input equals the previous
/// step's reuses its logits (no NFE). L' = 1 is autoregressive decoding.
/// </summary>
public sealed class BlockSampler : IDisposable
{
    readonly Denoiser _model;
    readonly IBackend _b;
    readonly ModelConfig _c;
    readonly int _bos, _eos;
    readonly Dictionary<(int, int), DenoiserWorkspace> _workspaces = [];

    public BlockSampler(Denoiser model, int bosId, int eosId)
    {
        _model = model; _b = model.Backend; _c = model.Config; _bos = bosId; _eos = eosId;
    }

    DenoiserWorkspace Workspace(int batch, int len)
    {
        if (!_workspaces.TryGetValue((batch, len), out var ws)) _workspaces[(batch, len)] = ws = new DenoiserWorkspace(_b, _c, batch, len);
        return ws;
    }

    /// <summary>Device buffers held between calls (for tests of ownership).</summary>
    public int BufferCount => _workspaces.Values.Sum(w => w.BufferCount);

    /// <summary>Frees the workspaces kept between calls.</summary>
    public void Dispose()
    {
        foreach (var w in _workspaces.Values) w.Dispose();
        _workspaces.Clear();
    }

    /// <summary>
    /// Generates continuations of BOS ⊕ prompt for options.BatchSize sequences. <paramref name="onBlock"/> receives,
    /// per sequence, the tokens each committed block added (after stop truncation). Cancellation is checked before
    /// every denoising step and throws <see cref="OperationCanceledException"/>.
    /// </summary>
    /// <remarks>
    /// Stop rules are the reference's two modes. Variable length (<see cref="SamplingOptions.StopOnEos"/>): a sequence
    /// stops when it holds more than one EOS, BOS counting as the first (so at the first generated EOS), and is cut
    /// after it; when the entropy of its last window falls below the threshold it stops and that window is cut off.
    /// Fixed length: EOS does not stop it; a sample that falls to low entropy is discarded and regenerated (at most
    /// <see cref="SamplingOptions.MaxRegenerations"/> times, after which it is returned as it is with
    /// <see cref="StopReason.LowEntropy"/>). In fixed-length mode <paramref name="onBlock"/> receives a sequence's
    /// blocks only once the sample is accepted, so no consumer sees a discarded sample.
    /// </remarks>
    public SampleResult Generate(ReadOnlySpan<int> prompt, SamplingOptions options, Action<int, int[]>? onBlock = null, CancellationToken cancel = default)
    {
        options.Validate();
        var rng = new Rng(options.Seed);
        if (options.StopOnEos) return GenerateBatch(prompt, options, options.BatchSize, rng, onBlock, cancel);

        var clock = Stopwatch.StartNew();
        int bs = options.BatchSize;
        var tokens = new int[bs][];
        var reasons = new StopReason[bs];
        int nfe = 0, cachePasses = 0, generated = 0;
        var pending = Enumerable.Range(0, bs).ToList();
        for (int attempt = 0; pending.Count > 0; attempt++)
        {
            var r = GenerateBatch(prompt, options, pending.Count, rng, null, cancel);
            nfe += r.Nfe; cachePasses += r.CachePasses; generated += r.GeneratedTokens;
            var retry = new List<int>();
            for (int i = 0; i < pending.Count; i++)
            {
                int s = pending[i];
                tokens[s] = r.Tokens[i]; reasons[s] = r.Reasons[i];
                if (r.Reasons[i] == StopReason.LowEntropy && attempt < options.MaxRegenerations) retry.Add(s);
                else onBlock?.Invoke(s, r.Tokens[i]);
            }
            pending = retry;
        }
        clock.Stop();
        return new SampleResult(tokens, reasons, nfe, cachePasses, generated, clock.Elapsed);
    }

    SampleResult GenerateBatch(ReadOnlySpan<int> prompt, SamplingOptions options, int bs, Rng rng, Action<int, int[]>? onBlock, CancellationToken cancel)
    {
        int lb = _c.BlockSize, steps = options.StepsPerBlock > 0 ? options.StepsPerBlock : lb;
        float entropyThreshold = options.EntropyThreshold ?? (float)Math.Min(4.0, 0.4 * Math.Log(_c.VocabSize));
        var clock = Stopwatch.StartNew();

        var prefix = new List<int>(prompt.Length + 1) { _bos };
        foreach (var t in prompt) prefix.Add(t);
        var seqs = Enumerable.Range(0, bs).Select(_ => new List<int>(prefix)).ToArray();
        var done = new StopReason?[bs];
        var finalLength = new int[bs];   // a stopped sequence keeps being computed with the batch; its output ends here
        int generated = 0, nfe = 0, cachePasses = 0;
        // rotary tables grow with the positions reached, block by block, not with MaxTokens up front
        _model.Rotary.EnsureCapacity(prefix.Count + lb);

        using var cache = options.UseKvCache ? new KvCache(_b, _c, bs, _c.ModelLength) : null;
        using var stepBuffers = new OwnedBuffers(_b);
        int committed = prefix.Count / lb * lb;   // tokens already in whole blocks
        // commit the prompt's whole blocks
        for (int start = 0; start < committed; start += lb)
        {
            if (cache != null) { Commit(cache, seqs, start, lb); cachePasses++; }
        }

        var block = new int[bs * lb];
        var fixedMask = new bool[bs * lb];
        var uniforms = stepBuffers.Float("uniforms", bs, lb);
        var sampledDev = stepBuffers.Int("sampled tokens", bs, lb);
        var probsDev = stepBuffers.Float("sampled probabilities", bs, lb);
        var sampled = new int[bs * lb];
        var probs = new float[bs * lb];
        var u = new float[bs * lb];
        // DDPM and first-hitting decide first which positions a step reveals: only those rows are gathered here and sampled
        var hitRows = options.Kind != SamplerKind.Confidence ? _b.AllocFloat(checked(bs * _c.VocabSize)) : default;
        using var hitRowsOwner = hitRows.Storage;

        while (done.Any(d => d == null))
        {
            cancel.ThrowIfCancellationRequested();
            _model.Rotary.EnsureCapacity(committed + lb);
            // block = prompt remainder (fixed) + masks
            for (int s = 0; s < bs; s++)
                for (int i = 0; i < lb; i++)
                {
                    int pos = committed + i;
                    bool given = pos < seqs[s].Count;
                    block[s * lb + i] = given ? seqs[s][pos] : _c.MaskId;
                    fixedMask[s * lb + i] = given;
                }
            cache?.MakeRoom(lb);
            FloatView logits = default;
            bool stale = true;
            for (int k = 0; k < steps || AnyMasked(block); k++)
            {
                if (!AnyMasked(block)) break;
                cancel.ThrowIfCancellationRequested(); // every step: T may be huge and steps without a model call are cheap
                if (stale)
                {
                    logits = Denoise(cache, seqs, committed, block, bs);
                    nfe++;
                    stale = false;
                }
                if (options.Kind != SamplerKind.Confidence)
                {
                    var chosen = ChooseReveals(options, rng, block, k, steps);
                    stale = SampleChosen(options, rng, logits, hitRows, chosen, block, uniforms, sampledDev, probsDev, u, sampled);
                    continue;
                }
                for (int i = 0; i < u.Length; i++) u[i] = rng.NextFloat();
                _b.Upload(uniforms, u);
                _b.SampleCategorical(logits, bs * lb, _c.VocabSize, _c.MaskId, options.Temperature, options.TopP, uniforms, sampledDev, probsDev);
                _b.Download(sampledDev, sampled);
                _b.Download(probsDev, probs);
                bool changed = false;
                for (int s = 0; s < bs; s++)
                    changed |= Reveal(options, rng, block.AsSpan(s * lb, lb), sampled.AsSpan(s * lb, lb), probs.AsSpan(s * lb, lb), k, steps);
                stale = changed;
            }
            // commit: the block becomes clean context
            for (int s = 0; s < bs; s++)
                for (int i = 0; i < lb; i++)
                    if (!fixedMask[s * lb + i]) seqs[s].Add(block[s * lb + i]);
            if (cache != null) { Commit(cache, seqs, committed, lb); cachePasses++; }
            committed += lb;

            for (int s = 0; s < bs; s++)
            {
                if (done[s] != null) continue;
                int firstNew = Math.Max(prefix.Count, committed - lb);
                var added = new List<int>();
                for (int pos = firstNew; pos < committed; pos++)
                {
                    int tok = seqs[s][pos];
                    added.Add(tok);
                    int genCount = pos - prefix.Count + 1;
                    // BOS counts as the first EOS: the first generated one is the second, and the sample ends after it
                    if (options.StopOnEos && tok == _eos) { done[s] = StopReason.Eos; break; }
                    if (genCount >= options.MaxTokens) { done[s] = StopReason.MaxTokens; break; }
                }
                generated += added.Count;
                onBlock?.Invoke(s, [.. added]);
                if (done[s] != null) finalLength[s] = firstNew + added.Count;
                else if (entropyThreshold > 0 && LowEntropy(seqs[s], prefix.Count, options.EntropyWindow, entropyThreshold))
                {
                    // variable length cuts the low-entropy window off; fixed length discards the sample (the caller regenerates)
                    done[s] = StopReason.LowEntropy;
                    finalLength[s] = options.StopOnEos ? seqs[s].Count - options.EntropyWindow : seqs[s].Count;
                }
            }
        }
        clock.Stop();
        var tokens = seqs.Select((s, i) => s.Skip(prefix.Count).Take(Math.Max(0, (finalLength[i] > 0 ? finalLength[i] : s.Count) - prefix.Count)).ToArray()).ToArray();
        return new SampleResult(tokens, [.. done.Select(d => d!.Value)], nfe, cachePasses, generated, clock.Elapsed);
    }

    bool AnyMasked(int[] block) => Array.IndexOf(block, _c.MaskId) >= 0;

    /// <summary>
    /// The positions (indices into the batch's block) this step reveals. First-hitting: one uniformly chosen masked
    /// position per sequence. DDPM: each masked position with (α_s - α_t)/(1 - α_t), t = 1 - k/T → s = t - 1/T; the last step all.
    /// </summary>
    List<int> ChooseReveals(SamplingOptions o, Rng rng, int[] block, int step, int steps)
    {
        int lb = _c.BlockSize;
        var chosen = new List<int>();
        double t = 1.0 - (double)step / steps, s = Math.Max(0.0, t - 1.0 / steps);
        double p = step >= steps - 1 ? 1.0 : (t - s) / t;
        for (int q = 0; q < block.Length / lb; q++)
        {
            var seq = block.AsSpan(q * lb, lb);
            int count = seq.Count(_c.MaskId);
            if (count == 0) continue;
            if (o.Kind == SamplerKind.FirstHitting)
            {
                int skip = rng.NextInt(count), i = 0;
                while (seq[i] != _c.MaskId || skip-- > 0) i++;
                chosen.Add(q * lb + i);
                continue;
            }
            for (int i = 0; i < lb; i++)
                if (seq[i] == _c.MaskId && rng.NextDouble() < p) chosen.Add(q * lb + i);
        }
        return chosen;
    }

    /// <summary>
    /// Samples a token for each chosen position and reveals it; returns whether any token changed. Up to one row per
    /// sequence, the chosen rows are gathered and only they are sampled; more (the last step), all rows are.
    /// </summary>
    bool SampleChosen(SamplingOptions o, Rng rng, FloatView logits, FloatView rows, List<int> chosen, int[] block, FloatView uniforms, IntView sampledDev, FloatView probsDev, float[] u, int[] sampled)
    {
        int v = _c.VocabSize, n = chosen.Count;
        if (n == 0) return false;
        if (n <= rows.Length / v)
        {
            for (int k = 0; k < n; k++)
            {
                _b.Copy(rows.Slice(k * v, v), logits.Slice(checked(chosen[k] * v), v));
                u[k] = rng.NextFloat();
            }
            _b.Upload(uniforms.Slice(0, n), u.AsSpan(0, n));
            _b.SampleCategorical(rows, n, v, _c.MaskId, o.Temperature, o.TopP, uniforms, sampledDev, probsDev);
            _b.Download(sampledDev.Slice(0, n), sampled.AsSpan(0, n));
            for (int k = 0; k < n; k++) block[chosen[k]] = sampled[k];
            return true;
        }
        Array.Clear(u);
        foreach (int i in chosen) u[i] = rng.NextFloat();
        _b.Upload(uniforms, u);
        _b.SampleCategorical(logits, block.Length, v, _c.MaskId, o.Temperature, o.TopP, uniforms, sampledDev, probsDev);
        _b.Download(sampledDev, sampled);
        foreach (int i in chosen) block[i] = sampled[i];
        return true;
    }

    /// <summary>Applies one reveal rule to one sequence's block; returns whether any token changed.</summary>
    internal bool Reveal(SamplingOptions o, Rng rng, Span<int> block, ReadOnlySpan<int> sampled, ReadOnlySpan<float> probs, int step, int steps)
    {
        Span<int> masked = stackalloc int[block.Length];
        int count = 0;
        for (int i = 0; i < block.Length; i++) if (block[i] == _c.MaskId) masked[count++] = i;
        if (count == 0) return false;
        switch (o.Kind)
        {
            case SamplerKind.FirstHitting:
            {
                int i = masked[rng.NextInt(count)];
                block[i] = sampled[i];
                return true;
            }
            case SamplerKind.Confidence:
            {
                int best = masked[0];
                bool any = false;
                for (int j = 0; j < count; j++)
                {
                    int i = masked[j];
                    if (probs[i] > probs[best]) best = i;
                    if (probs[i] > o.ConfidenceThreshold) { block[i] = sampled[i]; any = true; }
                }
                if (!any) block[best] = sampled[best];
                return true;
            }
            default:
            {
                // t = 1 - k/T → s = t - 1/T: reveal with (α_s - α_t)/(1 - α_t) = (t - s)/t; the last step reveals all.
                double t = 1.0 - (double)step / steps, s = Math.Max(0.0, t - 1.0 / steps);
                double p = step >= steps - 1 ? 1.0 : (t - s) / t;
                bool changed = false;
                for (int j = 0; j < count; j++)
                {
                    int i = masked[j];
                    if (rng.NextDouble() < p) { block[i] = sampled[i]; changed = true; }
                }
                return changed;
            }
        }
    }

    /// <summary>Logits [bs·L', V] of the current block given the committed prefix.</summary>
    FloatView Denoise(KvCache? cache, List<int>[] seqs, int committed, int[] block, int bs)
    {
        int lb = _c.BlockSize;
        if (cache != null)
        {
            var ws = Workspace(bs, lb);
            _b.Upload(ws.Ids, block);
            _b.Upload(ws.Positions, Positions(bs, committed, lb));
            _model.ForwardCached(ws, cache, commit: false);
            return _model.Head(ws, 0, lb);
        }
        // uncached: the whole window (at most L - L' clean tokens, whole blocks) ⊕ block, block-causal
        int ctx = Math.Min(committed, _c.ModelLength - lb);
        int len = ctx + lb;
        var wsFull = Workspace(bs, len);
        var ids = new int[bs * len];
        for (int s = 0; s < bs; s++)
        {
            for (int i = 0; i < ctx; i++) ids[s * len + i] = seqs[s][committed - ctx + i];
            block.AsSpan(s * lb, lb).CopyTo(ids.AsSpan(s * len + ctx));
        }
        _b.Upload(wsFull.Ids, ids);
        _b.Upload(wsFull.Positions, Positions(bs, committed - ctx, len));
        _model.Forward(wsFull, new AttentionShape(bs, _c.Heads, _c.HeadDim, len, MaskKind.BlockCausal, lb));
        return _model.Head(wsFull, ctx, lb);
    }

    void Commit(KvCache cache, List<int>[] seqs, int start, int lb)
    {
        int bs = seqs.Length;
        var ws = Workspace(bs, lb);
        var ids = new int[bs * lb];
        for (int s = 0; s < bs; s++) for (int i = 0; i < lb; i++) ids[s * lb + i] = seqs[s][start + i];
        cache.MakeRoom(lb);
        _b.Upload(ws.Ids, ids);
        _b.Upload(ws.Positions, Positions(bs, start, lb));
        _model.ForwardCached(ws, cache, commit: true);
    }

    static int[] Positions(int bs, int start, int len)
    {
        var p = new int[bs * len];
        for (int s = 0; s < bs; s++) for (int i = 0; i < len; i++) p[s * len + i] = start + i;
        return p;
    }

    internal static bool LowEntropy(List<int> seq, int promptLen, int window, float threshold)
    {
        int generated = seq.Count - promptLen;
        if (generated < window) return false;
        var counts = new Dictionary<int, int>();
        for (int i = seq.Count - window; i < seq.Count; i++) counts[seq[i]] = counts.GetValueOrDefault(seq[i]) + 1;
        double h = 0;
        foreach (var c in counts.Values) { double p = (double)c / window; h -= p * Math.Log(p); }
        return h < threshold;
    }
}
