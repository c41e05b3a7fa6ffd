using FastBlockDiff.Engine.Distributed;
using FastBlockDiff.Interop;
using FastBlockDiff.Kernels.Cuda;

namespace FastBlockDiff.Tests;

/// <summary>
/// The NCCL binding and the device all-reduce path with a world of one GPU (enough to check the calls, the
/// ncclUniqueId bootstrap, the completion polling and the bucketed path on a communication stream). Skips without a CUDA
/// device or without libnccl.
/// </summary>
public sealed class NcclTests
{
    static CudaBackend Gpu()
    {
        if (CudaBackend.Unavailable() is { } why) Assert.Skip($"no CUDA device: {why}");
        var nccl = CollectiveLibraries.Probe(CollectiveLibrary.Nccl);
        if (!nccl.Found) Assert.Skip($"NCCL not installed: {nccl.Reason}");
        return new CudaBackend();
    }

    static float[] Values(int n) => Enumerable.Range(0, n).Select(i => (float)Math.Sin(i) * 3f).ToArray();

    [Fact]
    public void OutOfPlaceAllReduceOfOneRankCopiesTheBuffer()
    {
        using var cuda = Gpu();
        var id = Nccl.UniqueId();
        nint comm = Nccl.CommInitRank(1, id, 0);
        try
        {
            var src = cuda.AllocFloat(4099);
            var dst = cuda.AllocFloat(4099);
            cuda.Upload(src, Values(4099));
            using var stream = CudaStream.Create(nonBlocking: true);
            ulong s = ((CudaStorage)src.Storage).Pointer, d = ((CudaStorage)dst.Storage).Pointer;
            Nccl.Check(NcclNative.ncclAllReduce(s, d, 4099, (int)NcclDataType.Float32, (int)NcclReduceOp.Sum, comm, stream.Handle), "ncclAllReduce");
            Assert.True(Nccl.WaitWithin(comm, stream.Handle, TimeSpan.FromSeconds(60), "ncclAllReduce"));
            var got = new float[4099];
            cuda.Download(dst, got);
            Assert.Equal(Values(4099), got); // a sum over one rank: NCCL wrote the destination
            src.Storage.Dispose(); dst.Storage.Dispose();
        }
        finally { NcclNative.ncclCommDestroy(comm); }
    }

    [Fact]
    public void CollectiveOfOneGpuReducesTheBackendBufferInPlace()
    {
        using var cuda = Gpu();
        using var world = new NcclCollective(SingleProcess.Instance, cuda);
        Assert.Equal(1, world.Size);
        Assert.Contains("NCCL", world.Description);
        var buffer = cuda.AllocFloat(1000);
        var slice = buffer.Slice(200, 600);
        cuda.Upload(buffer, Values(1000));
        world.AllReduce(cuda, slice, ReduceOp.Sum);
        world.AllReduce(cuda, slice, ReduceOp.Average);
        var got = new float[1000];
        cuda.Download(buffer, got);
        Assert.Equal(Values(1000), got);
        buffer.Storage.Dispose();
    }

    [Fact]
    public void BucketsQueuedBehindTheBackendStreamReduceInPlace()
    {
        using var cuda = Gpu();
        using var world = new NcclCollective(SingleProcess.Instance, cuda);
        var grads = cuda.AllocFloat(1000);
        GradientBucket[] plan = [new(900, 100), new(300, 600), new(299, 1), new(0, 299)];
        using (var reduce = new GradientAllReduce(world, cuda, grads, plan))
        {
            Assert.True(reduce.Overlaps);
            for (int step = 0; step < 2; step++)
            {
                // written on the backend's stream right before the buckets are started: the event orders the all-reduce after it
                cuda.Upload(grads, Values(1000));
                cuda.ScaleShift(grads, 2f, 1f);
                reduce.GradientsDoneFrom(300);
                reduce.Complete();
            }
        }
        var got = new float[1000];
        cuda.Download(grads, got);
        Assert.Equal(Values(1000).Select(v => 2f * v + 1f), got); // a sum over one rank leaves the values as written
        grads.Storage.Dispose();
    }
}
