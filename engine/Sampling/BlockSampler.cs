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
/// <remarks>
/// A first-hitting or DDPM block stays in the backend's ids buffer while it is denoised: its ids are uploaded once, each
/// step writes the tokens it samples into them, and they are read back once, at block end (see <see cref="BlockStep"/>);
/// on a device no step waits for it. The confidence rule takes the block through the host every step. The CPU runs the
/// same path (its read-backs are copies), so the CPU tests check the bookkeeping the devices rely on.
/// </remarks>
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
    /// <see cref="StopReason.LowEntropy"/>). In fixed-length mode with regeneration possible (an entropy stop and
    /// retries) <paramref name="onBlock"/> receives a sequence's tokens only once the sample is accepted, so no consumer
    /// sees a discarded sample; otherwise it receives them block by block.
    /// </remarks>
    public SampleResult Generate(ReadOnlySpan<int> prompt, SamplingOptions options, Action<int, int[]>? onBlock = null, CancellationToken cancel = default)
    {
        options.Validate();
        var rng = new Rng(options.Seed);
        // nothing can be regenerated (variable length, no entropy stop, or no retries): blocks go out as they are committed
        if (options.StopOnEos || options.EntropyThreshold == 0 || options.MaxRegenerations == 0)
            return GenerateBatch(prompt, options, options.BatchSize, rng, onBlock, cancel);

        var clock = Stopwatch.StartNew();
        int bs = options.BatchSize;
        var tokens = new int[bs][];
        var reasons = new StopReason[bs];
        int nfe = 0, cachePasses = 0, generated = 0;
        double modelSeconds = 0, samplerSeconds = 0;
        var pending = Enumerable.Range(0, bs).ToList();
        for (int attempt = 0; pending.Count > 0; attempt++)
        {
            var r = GenerateBatch(prompt, options, pending.Count, rng, null, cancel);
            nfe += r.Nfe; cachePasses += r.CachePasses; generated += r.GeneratedTokens;
            modelSeconds += r.ModelSeconds; samplerSeconds += r.SamplerSeconds;
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
        return new SampleResult(tokens, reasons, nfe, cachePasses, generated, clock.Elapsed) { ModelSeconds = modelSeconds, SamplerSeconds = samplerSeconds };
    }

    SampleResult GenerateBatch(ReadOnlySpan<int> prompt, SamplingOptions options, int bs, Rng rng, Action<int, int[]>? onBlock, CancellationToken cancel)
    {
        int lb = _c.BlockSize, steps = BlockStep.Steps(options, _c);
        float entropyThreshold = BlockStep.EntropyThreshold(options, _c);
        var clock = Stopwatch.StartNew();
        var split = options.MeasureSplit ? new SplitClock(_b) : null;

        var prefix = new List<int>(prompt.Length + 1) { _bos };
        foreach (var t in prompt) prefix.Add(t);
        var seqs = Enumerable.Range(0, bs).Select(_ => new List<int>(prefix)).ToArray();
        var done = new StopReason?[bs];
        var finalLength = new int[bs];   // a stopped sequence keeps being computed with the batch; its output ends here
        int generated = 0, nfe = 0, cachePasses = 0;
        // rotary tables grow with the positions reached, block by block, not with MaxTokens up front
        _model.Rotary.EnsureCapacity(prefix.Count + lb);

        using var cache = options.UseKvCache ? new KvCache(_b, _c, bs, _c.ModelLength) : null;
        int committed = prefix.Count / lb * lb;   // tokens already in whole blocks
        // commit the prompt's whole blocks
        for (int start = 0; start < committed; start += lb)
        {
            if (cache != null) { Commit(cache, seqs, start, lb, split); cachePasses++; }
        }

        var block = new int[bs * lb];
        var fixedMask = new bool[bs * lb];
        using var step = new BlockStep(_b, _c, bs);
        var logits = new BlockLogits(_c.VocabSize, lb, split);
        bool resident = BlockStep.CanStayOnDevice(options);

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
            var input = Input(cache, bs, committed);
            if (resident) UploadInput(input, seqs, committed, block);
            bool stale = true;
            for (int k = 0; k < steps || AnyMasked(block); k++)
            {
                if (!AnyMasked(block)) break;
                cancel.ThrowIfCancellationRequested(); // every step: T may be huge and steps without a model call are cheap
                if (stale)
                {
                    split?.ToSampler();
                    if (!resident) UploadInput(input, seqs, committed, block);
                    Denoise(cache, input, logits);
                    split?.ToModel();
                    nfe++;
                    stale = false;
                }
                stale = step.Step(options, rng, logits, block, k, steps, resident ? input.Block : null);
            }
            if (resident) step.ReadBlock(input.Block, block);
            // commit: the block becomes clean context
            for (int s = 0; s < bs; s++)
                for (int i = 0; i < lb; i++)
                    if (!fixedMask[s * lb + i]) seqs[s].Add(block[s * lb + i]);
            if (cache != null) { Commit(cache, seqs, committed, lb, split); cachePasses++; }
            committed += lb;

            for (int s = 0; s < bs; s++)
            {
                if (done[s] != null) continue;
                done[s] = BlockStep.EndOfBlock(options, seqs[s], prefix.Count, committed, lb, _eos, entropyThreshold, out var added, out int end);
                generated += added.Length;
                onBlock?.Invoke(s, added);
                if (done[s] != null) finalLength[s] = end;
            }
        }
        split?.ToSampler();
        clock.Stop();
        var tokens = seqs.Select((s, i) => s.Skip(prefix.Count).Take(Math.Max(0, (finalLength[i] > 0 ? finalLength[i] : s.Count) - prefix.Count)).ToArray()).ToArray();
        return new SampleResult(tokens, [.. done.Select(d => d!.Value)], nfe, cachePasses, generated, clock.Elapsed)
        {
            ModelSeconds = split?.ModelSeconds ?? 0, SamplerSeconds = split?.SamplerSeconds ?? 0,
        };
    }

    bool AnyMasked(int[] block) => Array.IndexOf(block, _c.MaskId) >= 0;

    /// <summary>
    /// The model's input while a block is denoised: with the cache the block alone; without, the window of at most
    /// L - L' clean tokens (whole blocks) ⊕ the block, block-causal. Block: where the block sits in the ids.
    /// </summary>
    readonly record struct BlockInput(DenoiserWorkspace Ws, int Length, int Context, DeviceBlock Block);

    BlockInput Input(KvCache? cache, int bs, int committed)
    {
        int lb = _c.BlockSize;
        int ctx = cache != null ? 0 : Math.Min(committed, _c.ModelLength - lb);
        int len = ctx + lb;
        var ws = Workspace(bs, len);
        return new BlockInput(ws, len, ctx, new DeviceBlock(ws.Ids, len, ctx));
    }

    /// <summary>Uploads the ids (context ⊕ the block as the host has it) and positions of the model's input.</summary>
    void UploadInput(BlockInput input, List<int>[] seqs, int committed, int[] block)
    {
        int lb = _c.BlockSize, bs = seqs.Length, len = input.Length, ctx = input.Context;
        var ids = new int[bs * len];
        for (int s = 0; s < bs; s++)
        {
            for (int i = 0; i < ctx; i++) ids[s * len + i] = seqs[s][committed - ctx + i];
            block.AsSpan(s * lb, lb).CopyTo(ids.AsSpan(s * len + ctx));
        }
        _b.Upload(input.Ws.Ids, ids);
        _b.Upload(input.Ws.Positions, Positions(bs, committed - ctx, len));
    }

    /// <summary>Runs the network on the current block given the committed prefix (its input uploaded); its logits [bs·L', V] are left to the head, row by row as steps ask.</summary>
    void Denoise(KvCache? cache, BlockInput input, BlockLogits logits)
    {
        if (cache != null)
        {
            _model.ForwardCached(input.Ws, cache, commit: false);
            logits.Pending(_model, input.Ws, 0);
            return;
        }
        _model.Forward(input.Ws, new AttentionShape(input.Ws.Batch, _c.Heads, _c.HeadDim, input.Length, MaskKind.BlockCausal, _c.BlockSize));
        logits.Pending(_model, input.Ws, input.Context);
    }

    void Commit(KvCache cache, List<int>[] seqs, int start, int lb, SplitClock? split)
    {
        split?.ToSampler();
        int bs = seqs.Length;
        var ws = Workspace(bs, lb);
        var ids = new int[bs * lb];
        for (int s = 0; s < bs; s++) for (int i = 0; i < lb; i++) ids[s * lb + i] = seqs[s][start + i];
        cache.MakeRoom(lb);
        _b.Upload(ws.Ids, ids);
        _b.Upload(ws.Positions, Positions(bs, start, lb));
        _model.ForwardCached(ws, cache, commit: true);
        split?.ToModel();
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
