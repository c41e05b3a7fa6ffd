using FastBlockDiff.Engine.Model;
using FastBlockDiff.Engine.Training;
using FastBlockDiff.Kernels;

namespace FastBlockDiff.Engine.Sampling;

/// <summary>
/// Where a block's tokens live on the device while it is denoised: the ids buffer the model reads, sequence q's block at
/// Ids[q·RowStride + RowOffset …]. Steps write the tokens they sample there, and the host reads them once, at block end.
/// </summary>
internal readonly record struct DeviceBlock(IntView Ids, int RowStride, int RowOffset);

/// <summary>
/// One denoising step and the stop rules after a committed block, for a batch of <c>bs</c> sequences: the one place
/// both <see cref="BlockSampler"/> and the request scheduler (which runs each request as a batch of one with its own
/// random stream) take them from, so a scheduled request draws exactly what it draws alone.
/// </summary>
/// <remarks>
/// Which positions a first-hitting or DDPM step reveals depends only on the random stream and on which positions are
/// still masked, never on the tokens drawn: so on a device the host decides them, the device samples and writes the
/// tokens into the <see cref="DeviceBlock"/>, and nothing is read back until the block ends (<see cref="ReadBlock"/>);
/// the host's block holds <see cref="Pending"/> where a token was revealed on the device. The confidence rule reveals by
/// the sampled probabilities, so it reads them back every step.
/// </remarks>
internal sealed class BlockStep : IDisposable
{
    readonly IBackend _b;
    readonly int _lb, _v, _mask, _bs;
    readonly NoiseKind _noise;
    readonly OwnedBuffers _buffers;
    readonly FloatView _uniforms, _probsDev;
    readonly IntView _sampledDev, _indexDev;
    FloatView _hitRows;
    bool _hasHitRows;
    readonly int[] _sampled, _index;
    readonly float[] _probs, _u;
    readonly List<int> _chosen = [];

    public BlockStep(IBackend backend, ModelConfig c, int bs)
    {
        _b = backend; _lb = c.BlockSize; _v = c.VocabSize; _mask = c.MaskId; _bs = bs; _noise = c.Noise;
        _buffers = new OwnedBuffers(backend);
        _uniforms = _buffers.Float("uniforms", bs, _lb);
        _sampledDev = _buffers.Int("sampled tokens", bs, _lb);
        _probsDev = _buffers.Float("sampled probabilities", bs, _lb);
        _indexDev = _buffers.Int("reveal positions", 2 * bs, _lb);
        _sampled = new int[bs * _lb]; _probs = new float[bs * _lb]; _u = new float[bs * _lb]; _index = new int[2 * bs * _lb];
    }

    public void Dispose() => _buffers.Dispose();

    /// <summary>In the host's block: a position revealed on the device whose token has not been read back yet.</summary>
    public const int Pending = -1;

    /// <summary>Whether <see cref="Step"/> can keep this sampler's block on the device (every rule but confidence).</summary>
    public static bool CanStayOnDevice(SamplingOptions o) => o.Kind != SamplerKind.Confidence;

    public static int Steps(SamplingOptions o, ModelConfig c) => o.StepsPerBlock > 0 ? o.StepsPerBlock : c.BlockSize;
    public static float EntropyThreshold(SamplingOptions o, ModelConfig c) => o.EntropyThreshold ?? (float)Math.Min(4.0, 0.4 * Math.Log(c.VocabSize));

    /// <summary>
    /// Step <paramref name="k"/> of <paramref name="steps"/> on the batch's block [bs·L'] given its logits [bs·L', V];
    /// returns whether any token changed (the logits are then stale). With <paramref name="device"/> the sampled tokens
    /// are written there, not read back (<see cref="CanStayOnDevice"/> must hold).
    /// </summary>
    public bool Step(SamplingOptions o, Rng rng, BlockLogits logits, int[] block, int k, int steps, DeviceBlock? device = null)
    {
        if (o.Kind != SamplerKind.Confidence)
        {
            // DDPM and first-hitting decide first which positions a step reveals: only those rows are computed and sampled
            return SampleChosen(o, rng, logits, ChooseReveals(o, rng, block, k, steps), block, device);
        }
        if (device != null) throw new InvalidOperationException("the confidence rule reads the sampled probabilities back every step");
        for (int i = 0; i < _u.Length; i++) _u[i] = rng.NextFloat();
        _b.Upload(_uniforms, _u);
        _b.SampleCategorical(logits.All(), _bs * _lb, _v, _mask, o.Temperature, o.TopP, _uniforms, _sampledDev, _probsDev);
        _b.Download(_sampledDev, _sampled);
        _b.Download(_probsDev, _probs);
        bool changed = false;
        for (int s = 0; s < _bs; s++)
            changed |= RevealConfident(o, block.AsSpan(s * _lb, _lb), _sampled.AsSpan(s * _lb, _lb), _probs.AsSpan(s * _lb, _lb));
        return changed;
    }

    /// <summary>
    /// The positions (indices into the batch's block) this step reveals. First-hitting: one uniformly chosen masked
    /// position per sequence. DDPM: each masked position with (α_s - α_t)/(1 - α_t) under the model's noise schedule,
    /// t = 1 - k/T → s = t - 1/T; the last step all.
    /// </summary>
    List<int> ChooseReveals(SamplingOptions o, Rng rng, int[] block, int step, int steps)
    {
        var chosen = _chosen;
        chosen.Clear();
        double t = 1.0 - (double)step / steps, s = Math.Max(0.0, t - 1.0 / steps);
        double mt = NoiseSchedule.MaskProbability(_noise, t), ms = NoiseSchedule.MaskProbability(_noise, s);
        double p = step >= steps - 1 ? 1.0 : (mt - ms) / mt;
        for (int q = 0; q < block.Length / _lb; q++)
        {
            var seq = block.AsSpan(q * _lb, _lb);
            int count = seq.Count(_mask);
            if (count == 0) continue;
            if (o.Kind == SamplerKind.FirstHitting)
            {
                int skip = rng.NextInt(count), i = 0;
                while (seq[i] != _mask || skip-- > 0) i++;
                chosen.Add(q * _lb + i);
                continue;
            }
            for (int i = 0; i < _lb; i++)
                if (seq[i] == _mask && rng.NextDouble() < p) chosen.Add(q * _lb + i);
        }
        return chosen;
    }

    /// <summary>
    /// Samples a token for each chosen position and reveals it; returns whether any token changed. Only the chosen rows
    /// are sampled: computed by the head for them alone, or, when the logits exist already, gathered (up to one row
    /// per sequence; more, the last step, and all rows are sampled).
    /// </summary>
    bool SampleChosen(SamplingOptions o, Rng rng, BlockLogits logits, List<int> chosen, int[] block, DeviceBlock? device)
    {
        int v = _v, n = chosen.Count;
        if (n == 0) return false;
        if (!logits.Selective && !_hasHitRows) { _hitRows = _buffers.Float("first-hitting rows", _bs, _v); _hasHitRows = true; }
        if (logits.Selective || n <= _hitRows.Length / v)
        {
            var rows = logits.Rows(chosen, _b, _hitRows);
            for (int k = 0; k < n; k++) _u[k] = rng.NextFloat();
            _b.Upload(_uniforms.Slice(0, n), _u.AsSpan(0, n));
            _b.SampleCategorical(rows, n, v, _mask, o.Temperature, o.TopP, _uniforms, _sampledDev, _probsDev);
            if (device is { } d) { RevealOnDevice(d, chosen, block, gathered: true); return true; }
            _b.Download(_sampledDev.Slice(0, n), _sampled.AsSpan(0, n));
            for (int k = 0; k < n; k++) block[chosen[k]] = _sampled[k];
            return true;
        }
        Array.Clear(_u);
        foreach (int i in chosen) _u[i] = rng.NextFloat();
        _b.Upload(_uniforms, _u);
        _b.SampleCategorical(logits.All(), block.Length, v, _mask, o.Temperature, o.TopP, _uniforms, _sampledDev, _probsDev);
        if (device is { } dv) { RevealOnDevice(dv, chosen, block, gathered: false); return true; }
        _b.Download(_sampledDev, _sampled);
        foreach (int i in chosen) block[i] = _sampled[i];
        return true;
    }

    /// <summary>
    /// Writes the sampled tokens of the chosen positions into the device block (an asynchronous upload of the positions
    /// and one kernel, no read-back) and marks them <see cref="Pending"/> in the host's block. Gathered: chosen[k]'s
    /// token is sampled row k; else it is the row of its own position in the block.
    /// </summary>
    void RevealOnDevice(DeviceBlock d, List<int> chosen, int[] block, bool gathered)
    {
        int n = chosen.Count;
        for (int k = 0; k < n; k++)
        {
            int i = chosen[k];
            _index[k] = i / _lb * d.RowStride + d.RowOffset + i % _lb;
            _index[n + k] = gathered ? k : i;
            block[i] = Pending;
        }
        _b.Upload(_indexDev.Slice(0, 2 * n), _index.AsSpan(0, 2 * n));
        _b.ScatterTokens(d.Ids, _indexDev.Slice(0, n), _sampledDev, _indexDev.Slice(n, n), n);
    }

    /// <summary>The block end's one read-back: the device block's tokens into the host's block [bs·L'].</summary>
    public void ReadBlock(DeviceBlock d, int[] block)
    {
        var ids = new int[checked(_bs * d.RowStride)];
        _b.Download(d.Ids.Slice(0, ids.Length), ids);
        for (int q = 0; q < _bs; q++) ids.AsSpan(q * d.RowStride + d.RowOffset, _lb).CopyTo(block.AsSpan(q * _lb, _lb));
    }

    /// <summary>Confidence rule on one sequence's block: every masked position above the threshold, at least the most probable.</summary>
    bool RevealConfident(SamplingOptions o, Span<int> block, ReadOnlySpan<int> sampled, ReadOnlySpan<float> probs)
    {
        int best = -1;
        bool any = false;
        for (int i = 0; i < block.Length; i++)
        {
            if (block[i] != _mask) continue;
            if (best < 0 || probs[i] > probs[best]) best = i;
            if (probs[i] > o.ConfidenceThreshold) { block[i] = sampled[i]; any = true; }
        }
        if (best < 0) return false;
        if (!any) block[best] = sampled[best];
        return true;
    }

    /// <summary>
    /// Stop rules after the block ending at <paramref name="committed"/> was committed to <paramref name="seq"/>
    /// (prefix = BOS ⊕ prompt of length <paramref name="prefixLength"/>): the tokens the block added (truncated at a
    /// stop), the stop reason if the sequence stops, and then the length its output ends at. Variable length: BOS
    /// counts as the first EOS, so the first generated one ends the sample after it; low entropy cuts the last window
    /// off. Fixed length: EOS does not stop; low entropy marks the sample for regeneration (its length is kept).
    /// </summary>
    public static StopReason? EndOfBlock(SamplingOptions o, List<int> seq, int prefixLength, int committed, int lb, int eos,
        float entropyThreshold, out int[] added, out int finalLength)
    {
        int firstNew = Math.Max(prefixLength, committed - lb);
        var list = new List<int>();
        StopReason? done = null;
        for (int pos = firstNew; pos < committed; pos++)
        {
            int tok = seq[pos];
            list.Add(tok);
            if (o.StopOnEos && tok == eos) { done = StopReason.Eos; break; }
            if (pos - prefixLength + 1 >= o.MaxTokens) { done = StopReason.MaxTokens; break; }
        }
        added = [.. list];
        finalLength = firstNew + list.Count;
        if (done == null && entropyThreshold > 0 && BlockSampler.LowEntropy(seq, prefixLength, o.EntropyWindow, entropyThreshold))
        {
            done = StopReason.LowEntropy;
            finalLength = o.StopOnEos ? seq.Count - o.EntropyWindow : seq.Count;
        }
        return done;
    }
}
