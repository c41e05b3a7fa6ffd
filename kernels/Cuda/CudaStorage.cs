using FastBlockDiff.Interop;

namespace FastBlockDiff.Kernels.Cuda;

/// <summary>Device memory of the CUDA backend: one cuMemAlloc'd buffer of Length elements of ElementSize bytes.</summary>
public sealed class CudaStorage : DeviceStorage
{
    readonly DeviceMemory memory;
    public override int Length { get; }
    public int ElementSize { get; }
    public ulong Pointer => memory.Pointer;

    internal CudaStorage(long length, int elementSize)
    {
        // a wrapped int product arrives here negative: that is a caller's bug, never a small allocation
        if (length < 0 || length > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(length), length, $"CUDA buffer of {length} elements of {elementSize} bytes: the size is negative or beyond {int.MaxValue} elements (an overflowed size product?)");
        if (elementSize <= 0) throw new ArgumentOutOfRangeException(nameof(elementSize), elementSize, "element size must be positive");
        Length = (int)length;
        ElementSize = elementSize;
        memory = DeviceMemory.Allocate(Math.Max(length, 1) * elementSize);
    }

    public override void Dispose()
    {
        memory.Dispose();
        base.Dispose();
    }
}
