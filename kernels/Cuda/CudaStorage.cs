using FastBlockDiff.Interop;

namespace FastBlockDiff.Kernels.Cuda;

/// <summary>Device memory of the CUDA backend: one cuMemAlloc'd buffer of Length elements of ElementSize bytes.</summary>
public sealed class CudaStorage : DeviceStorage
{
    readonly DeviceMemory memory;
    public override int Length { get; }
    public int ElementSize { get; }
    public ulong Pointer => memory.Pointer;

    internal CudaStorage(int length, int elementSize)
    {
        Length = length;
        ElementSize = elementSize;
        memory = DeviceMemory.Allocate((long)Math.Max(length, 1) * elementSize);
    }

    public override void Dispose()
    {
        memory.Dispose();
        base.Dispose();
    }
}
