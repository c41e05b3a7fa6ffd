using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using FastBlockDiff.Engine.Model;
using FastBlockDiff.Engine.Sampling;
using FastBlockDiff.Engine.Text;
using FastBlockDiff.Engine.Training;
using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace FastBlockDiff.Engine.Serving;

/// <summary>The scheduler's queue is full: the caller should retry later (HTTP 429).</summary>
public sealed class SchedulerFullException(int capacity)
    : UserInputException($"the request queue is full ({capacity} waiting): retry later");

/// <summary>
/// Serves concurrent generation requests on one model together (DESIGN.md section 6). One loop owns the model's
/// backend; each round denoises one block of every active request: the dense layers run once over all of them,
/// attention per request against its own KV cache, so requests of any prompt length and progress share a batch.
/// At every block boundary waiting requests are admitted and finished ones retired. Each request keeps its own
/// prompt, length, seed (its own random stream), sampler and stop rules, and draws exactly what it draws alone,
/// so its text equals a run of <see cref="BlockDiffusionModel.Sample"/> with the same seed — as long as the
/// backend's GEMM gives every row the same result whatever the number of rows: the scheduler switches a CPU backend
/// to its batch-invariant GEMM (<see cref="CpuBackend.BatchInvariantGemm"/>, for every user of that backend from then
/// on); GPU backends are not batch-invariant yet (see the README on batching).
/// </summary>
public sealed class RequestScheduler : IBlockGenerator, IDisposable
{
    readonly BlockDiffusionModel _model;
    readonly Denoiser _net;
    readonly IBackend _b;
    readonly ModelConfig _c;
    readonly ILogger _log;
    readonly Channel<Request> _queue;
    readonly CancellationTokenSource _shutdown = new();
    readonly Task _loop;
    readonly Dictionary<int, DenoiserWorkspace> _workspaces = [];
    int _waiting;
    long _requests, _tokens, _nfe;

    /// <summary>Most requests denoised together.</summary>
    public int MaxBatch { get; }
    /// <summary>Most requests waiting to be admitted; beyond it <see cref="StreamAsync"/> throws <see cref="SchedulerFullException"/>.</summary>
    public int MaxQueue { get; }
    public ITextTokenizer Tokenizer => _model.Tokenizer;
    public ModelConfig Config => _model.Config;
    /// <summary>Requests waiting for the next block boundary.</summary>
    public int QueueDepth => Volatile.Read(ref _waiting);
    /// <summary>Requests in the batch now.</summary>
    public int ActiveRequests { get; private set; }
    public long CompletedRequests => Interlocked.Read(ref _requests);
    public long GeneratedTokens => Interlocked.Read(ref _tokens);
    public long Nfe => Interlocked.Read(ref _nfe);
    /// <summary>Time spent running rounds (the backend busy with requests).</summary>
    public TimeSpan Busy => TimeSpan.FromTicks(Interlocked.Read(ref _busyTicks));
    long _busyTicks;

    public RequestScheduler(BlockDiffusionModel model, int maxBatch = 16, int maxQueue = 256, ILogger? logger = null)
    {
        if (maxBatch <= 0) throw new UserInputException($"the batch of the scheduler must hold at least one request, got {maxBatch}");
        if (maxQueue <= 0) throw new UserInputException($"the queue of the scheduler must hold at least one request, got {maxQueue}");
        _model = model; _net = model.Denoiser; _b = model.Backend; _c = model.Config;
        if (_b is CpuBackend cpu) cpu.BatchInvariantGemm = true;
        MaxBatch = maxBatch; MaxQueue = maxQueue;
        _log = logger ?? NullLogger.Instance;
        _queue = Channel.CreateUnbounded<Request>(new UnboundedChannelOptions { SingleReader = true });
        _loop = Task.Factory.StartNew(Loop, TaskCreationOptions.LongRunning);
    }

    /// <inheritdoc/>
    public async IAsyncEnumerable<GenerationUpdate> StreamAsync(GenerationRequest request, [EnumeratorCancellation] CancellationToken cancel = default)
    {
        request.Options.Validate();
        if (request.Options.BatchSize != 1) throw new UserInputException($"a scheduled request generates one sequence, got a batch of {request.Options.BatchSize}");
        cancel.ThrowIfCancellationRequested();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancel, _shutdown.Token);
        var r = new Request(request, _model.Tokenizer.Encode(request.Prompt), stop.Token);
        if (Interlocked.Increment(ref _waiting) > MaxQueue)
        {
            Interlocked.Decrement(ref _waiting);
            throw new SchedulerFullException(MaxQueue);
        }
        if (!_queue.Writer.TryWrite(r))
        {
            Interlocked.Decrement(ref _waiting);
            throw new ObjectDisposedException(nameof(RequestScheduler));
        }
        try
        {
            await foreach (var u in r.Updates.Reader.ReadAllAsync(cancel))
            {
                cancel.ThrowIfCancellationRequested();
                yield return u;
            }
        }
        finally { stop.Cancel(); }   // a consumer that leaves early retires its request at the next step
    }

    void Loop()
    {
        var active = new List<Slot>();
        while (true)
        {
            if (active.Count == 0)
            {
                // idle: wait for a request
                try { if (!_queue.Reader.WaitToReadAsync(_shutdown.Token).AsTask().GetAwaiter().GetResult()) return; }
                catch (OperationCanceledException) { return; }
            }
            _model.BackendGate.Wait();
            long round = Stopwatch.GetTimestamp();
            try
            {
                // block boundary: admit what waits now (requests that queued while the backend was busy join together)
                while (active.Count < MaxBatch && _queue.Reader.TryRead(out var next)) { Interlocked.Decrement(ref _waiting); active.Add(new Slot(next, this)); }
                ActiveRequests = active.Count;
                foreach (var a in active.Where(a => a.State == RequestState.New)) Start(a);
                RunBlock(active.Where(a => a.State == RequestState.Running).ToList());
            }
            catch (Exception e)
            {
                _log.LogError(e, "scheduler: a round failed; its {Count} requests fail with it", active.Count);
                foreach (var a in active) a.Fail(e);
            }
            finally
            {
                _model.BackendGate.Release();
                Interlocked.Add(ref _busyTicks, Stopwatch.GetElapsedTime(round).Ticks);
            }
            int before = active.Count;
            active.RemoveAll(a => a.State == RequestState.Finished);
            if (active.Count != before) _log.LogDebug("scheduler: {Retired} retired, {Active} active, {Waiting} waiting", before - active.Count, active.Count, QueueDepth);
            ActiveRequests = active.Count;
        }
    }

    /// <summary>Commits the prompt's whole blocks to the request's cache, as the sampler does alone.</summary>
    void Start(Slot a)
    {
        if (a.Cancelled()) return;
        _net.Rotary.EnsureCapacity(a.Prefix.Count + a.Options.MaxTokens + _c.BlockSize);
        int lb = _c.BlockSize;
        for (; a.Committed + lb <= a.Prefix.Count; a.Committed += lb) Forward([a], a.Committed, commit: true);
        a.State = RequestState.Running;
    }

    /// <summary>One block of every running request: step until each block is unmasked, then commit them all.</summary>
    void RunBlock(List<Slot> batch)
    {
        int lb = _c.BlockSize;
        foreach (var a in batch) a.BeginBlock(lb, _c.MaskId);
        while (true)
        {
            var stepping = batch.Where(a => a.State == RequestState.Running && a.Block.Contains(_c.MaskId)).ToList();
            stepping.RemoveAll(a => a.Cancelled());
            if (stepping.Count == 0) break;
            var stale = stepping.Where(a => a.Stale).ToList();
            if (stale.Count > 0)
            {
                var logits = Forward(stale, -1, commit: false);
                for (int i = 0; i < stale.Count; i++)
                {
                    _b.Copy(stale[i].Logits, logits.Slice(i * lb * _c.VocabSize, lb * _c.VocabSize));
                    stale[i].Nfe++; stale[i].Stale = false;
                }
                Interlocked.Increment(ref _nfe);
            }
            foreach (var a in stepping) Step(a);
        }
        var committing = batch.Where(a => a.State == RequestState.Running).ToList();
        if (committing.Count == 0) return;
        foreach (var a in committing)
            for (int i = 0; i < lb; i++)
                if (!a.FixedMask[i]) a.Seq.Add(a.Block[i]);
        Forward(committing, -1, commit: true);
        foreach (var a in committing) { a.Committed += lb; Finish(a); }
    }

    /// <summary>One denoising step of one request, with its own random stream: the sampler's step for a batch of one.</summary>
    void Step(Slot a)
    {
        a.Stale = a.Stepper.Step(a.Options, a.Rng, new BlockLogits(a.Logits, _c.VocabSize), a.Block, a.StepIndex, a.Steps);
        a.StepIndex++;
        if (a.Request.Body.ReportSteps) a.Send(new GenerationUpdate("", 0, a.PromptTokens, a.Output, a.Nfe, Draft: [.. a.Block]));
    }

    /// <summary>
    /// Stop rules after a committed block, the sampler's own (<see cref="BlockStep.EndOfBlock"/>); sends the block's
    /// update. Fixed-length mode with regeneration possible holds the sample back until it is accepted, as the sampler
    /// does: a low-entropy sample is discarded and drawn again on the request's own random stream.
    /// </summary>
    void Finish(Slot a)
    {
        int lb = _c.BlockSize, promptLen = a.Prefix.Count;
        var done = BlockStep.EndOfBlock(a.Options, a.Seq, promptLen, a.Committed, lb, _model.Tokenizer.EosId, a.EntropyThreshold, out var added, out int end);
        a.Output += added.Length;
        Interlocked.Add(ref _tokens, added.Length);
        if (!a.HoldsBack) a.Send(new GenerationUpdate(a.Decoder.Add(added), added.Length, a.PromptTokens, a.Output, a.Nfe));
        if (done is not { } reason) return;
        if (a.HoldsBack)
        {
            if (reason == StopReason.LowEntropy && a.Attempt < a.Options.MaxRegenerations) { a.Restart(); return; }
            int[] ids = [.. a.Seq.Skip(promptLen).Take(end - promptLen)];
            a.Send(new GenerationUpdate(a.Decoder.Add(ids), ids.Length, a.PromptTokens, a.Output, a.Nfe));
        }
        string rest = a.Decoder.Flush();
        if (rest.Length > 0) a.Send(new GenerationUpdate(rest, 0, a.PromptTokens, a.Output, a.Nfe));
        a.Send(new GenerationUpdate("", 0, a.PromptTokens, a.Output, a.Nfe, IsFinal: true, reason));
        a.Complete(null);
        Interlocked.Increment(ref _requests);
    }

    /// <summary>
    /// Runs the current blocks of <paramref name="batch"/> (or, with start ≥ 0, the committed tokens at
    /// [start, start+L') of a single request) through the network; returns the logits [batch·L', V] unless committing.
    /// </summary>
    FloatView Forward(List<Slot> batch, int start, bool commit)
    {
        int lb = _c.BlockSize, n = batch.Count;
        if (!_workspaces.TryGetValue(n, out var ws)) _workspaces[n] = ws = new DenoiserWorkspace(_b, _c, n, lb);
        var ids = new int[n * lb];
        var positions = new int[n * lb];
        for (int s = 0; s < n; s++)
        {
            var a = batch[s];
            int from = start >= 0 ? start : a.Committed;
            for (int i = 0; i < lb; i++)
            {
                ids[s * lb + i] = start >= 0 || commit ? a.Seq[from + i] : a.Block[i];
                positions[s * lb + i] = from + i;
            }
            a.Cache.MakeRoom(lb);
        }
        _b.Upload(ws.Ids, ids);
        _b.Upload(ws.Positions, positions);
        _net.ForwardCachedEach(ws, [.. batch.Select(a => a.Cache)], commit);
        return commit ? default : _net.Head(ws, 0, lb);
    }

    public void Dispose()
    {
        _queue.Writer.TryComplete();
        _shutdown.Cancel();
        try { _loop.Wait(); } catch (AggregateException) { }
        // the loop cancelled what it was running; what still waits in the queue is refused, not left hanging
        while (_queue.Reader.TryRead(out var r)) r.Updates.Writer.TryComplete(new ObjectDisposedException(nameof(RequestScheduler)));
        _shutdown.Dispose();
    }

    enum RequestState { New, Running, Finished }

    /// <summary>A submitted request and the channel its updates go to.</summary>
    sealed class Request(GenerationRequest request, int[] promptIds, CancellationToken cancel)
    {
        public readonly GenerationRequest Body = request;
        public readonly int[] PromptIds = promptIds;
        public readonly CancellationToken Cancel = cancel;
        public readonly Channel<GenerationUpdate> Updates = Channel.CreateUnbounded<GenerationUpdate>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    }

    /// <summary>A request in the batch: its own sequence, random stream, KV cache and device buffers.</summary>
    sealed class Slot
    {
        public readonly Request Request;
        public readonly SamplingOptions Options;
        public readonly List<int> Prefix;
        public List<int> Seq;
        public readonly Rng Rng;
        public readonly KvCache Cache;
        public readonly IncrementalDecoder Decoder;
        public readonly int PromptTokens, Steps;
        public readonly float EntropyThreshold;
        public readonly int[] Block;
        public readonly bool[] FixedMask;
        public readonly FloatView Logits;
        public readonly BlockStep Stepper;
        /// <summary>Fixed-length mode that may regenerate: the sample goes out only once accepted.</summary>
        public readonly bool HoldsBack;
        public RequestState State = RequestState.New;
        public int Committed, StepIndex, Output, Nfe, Attempt;
        public bool Stale;

        public Slot(Request r, RequestScheduler s)
        {
            Request = r; Options = r.Body.Options;
            var c = s._c; int lb = c.BlockSize;
            Prefix = [s._model.Tokenizer.BosId, .. r.PromptIds];
            Seq = [.. Prefix];
            PromptTokens = r.PromptIds.Length;
            Rng = new Rng(Options.Seed);
            Steps = BlockStep.Steps(Options, c);
            EntropyThreshold = BlockStep.EntropyThreshold(Options, c);
            HoldsBack = !Options.StopOnEos && EntropyThreshold > 0 && Options.MaxRegenerations > 0;
            Cache = new KvCache(s._b, c, 1, c.ModelLength);
            Decoder = new IncrementalDecoder(s._model.Tokenizer);
            Block = new int[lb]; FixedMask = new bool[lb];
            Logits = s._b.AllocFloat(lb * c.VocabSize);
            Stepper = new BlockStep(s._b, c, 1);
        }

        /// <summary>Discards a low-entropy fixed-length sample: the next one starts from the prompt, the random stream goes on.</summary>
        public void Restart()
        {
            Attempt++;
            Seq = [.. Prefix];
            Committed = 0; Output = 0;
            Cache.Reset();
            State = RequestState.New;
        }

        /// <summary>The next block: the prompt's remainder (fixed) and masks.</summary>
        public void BeginBlock(int lb, int maskId)
        {
            if (State != RequestState.Running) return;
            for (int i = 0; i < lb; i++)
            {
                int pos = Committed + i;
                FixedMask[i] = pos < Seq.Count;
                Block[i] = FixedMask[i] ? Seq[pos] : maskId;
            }
            Stale = true; StepIndex = 0;
        }

        public bool Cancelled()
        {
            if (State == RequestState.Finished) return true;
            if (!Request.Cancel.IsCancellationRequested) return false;
            Complete(new OperationCanceledException(Request.Cancel));
            return true;
        }

        public void Send(GenerationUpdate u) => Request.Updates.Writer.TryWrite(u);
        public void Fail(Exception e) { if (State != RequestState.Finished) Complete(e); }

        /// <summary>Retires the request and frees its device buffers (each is owned by this request alone).</summary>
        public void Complete(Exception? error)
        {
            State = RequestState.Finished;
            Request.Updates.Writer.TryComplete(error);
            Cache.Dispose();
            Logits.Storage.Dispose();
            Stepper.Dispose();
        }
    }
}
