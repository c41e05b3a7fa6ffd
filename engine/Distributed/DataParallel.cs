using FastBlockDiff.Interop;
using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cuda;

namespace FastBlockDiff.Engine.Distributed;

/// <summary>
/// How a process finds its place in a data-parallel job: whether a launcher (mpirun, srun) started it as one of N
/// ranks, joining the MPI world when it did, and which collective carries the gradients on a backend.
/// </summary>
public static class DataParallel
{
    /// <summary>The default bound on one collective's wait for the slowest rank (evaluation on rank 0 must fit inside it).</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromMinutes(10);

    /// <summary>The number of ranks a launcher announced in the environment, or null when no launcher started this process.</summary>
    public static int? LaunchedRanks()
    {
        foreach (var name in new[] { "OMPI_COMM_WORLD_SIZE", "PMI_SIZE" })
            if (int.TryParse(Environment.GetEnvironmentVariable(name), out int n) && n > 0) return n;
        if (Environment.GetEnvironmentVariable("PMIX_RANK") != null && int.TryParse(Environment.GetEnvironmentVariable("SLURM_NTASKS"), out int s) && s > 0) return s;
        return null;
    }

    /// <summary>
    /// The world of this process: <see cref="SingleProcess"/> unless a launcher started it as one of N &gt; 1 ranks, then
    /// MPI_COMM_WORLD. A missing or foreign MPI library is a <see cref="UserInputException"/>, never a silent single process.
    /// </summary>
    public static ICollective Join(TimeSpan? timeout = null)
    {
        int ranks = LaunchedRanks() ?? 1;
        if (ranks == 1) return SingleProcess.Instance;
        var world = MpiCollective.Join(timeout ?? DefaultTimeout);
        if (world.Size != ranks)
        {
            world.Dispose();
            throw new UserInputException($"the launcher announced {ranks} ranks but MPI_COMM_WORLD has {world.Size}: is this Open MPI's mpirun?");
        }
        // one GPU per rank on each machine: the CUDA backend takes device FASTBLOCKDIFF_CUDA_DEVICE, here the local rank
        if (Environment.GetEnvironmentVariable("FASTBLOCKDIFF_CUDA_DEVICE") is null
            && int.TryParse(Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_LOCAL_RANK"), out int local))
            Environment.SetEnvironmentVariable("FASTBLOCKDIFF_CUDA_DEVICE", local.ToString(System.Globalization.CultureInfo.InvariantCulture));
        return world;
    }

    /// <summary>
    /// The collective for the gradients on <paramref name="backend"/>: "auto" takes NCCL on the CUDA backend when libnccl
    /// loads and MPI otherwise; "nccl" insists on NCCL; "mpi" all-reduces through host memory. Null when
    /// <paramref name="world"/> itself serves (the caller then owns nothing new).
    /// </summary>
    public static ICollective? ForBackend(ICollective world, IBackend backend, string choice)
    {
        if (choice is not ("auto" or "mpi" or "nccl")) throw new UserInputException($"--collective must be auto, mpi or nccl, got '{choice}'");
        if (world.Size == 1 || choice == "mpi") return null;
        if (backend is not CudaBackend cuda)
        {
            if (choice == "nccl") throw new UserInputException($"--collective nccl needs the CUDA backend, but this run uses {backend.Name}");
            return null;
        }
        if (choice == "auto" && !CollectiveLibraries.IsAvailable(CollectiveLibrary.Nccl)) return null;
        return new NcclCollective(world, cuda);
    }

    /// <summary>One line per collective library: found (with version) or why not. For `fastblockdiff info`.</summary>
    public static IEnumerable<string> Describe()
    {
        var mpi = CollectiveLibraries.Probe(CollectiveLibrary.Mpi);
        yield return mpi.Found ? $"mpi: available ({mpi.Version}, {mpi.Path}); launch with mpirun -np N or train --nproc N" : $"mpi: unavailable: {mpi.Reason}";
        var nccl = CollectiveLibraries.Probe(CollectiveLibrary.Nccl);
        yield return nccl.Found ? $"nccl: available ({nccl.Version}, {nccl.Path}); all-reduces on the CUDA backend under mpirun" : $"nccl: unavailable: {nccl.Reason}";
    }
}
