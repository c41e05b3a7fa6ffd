using FastBlockDiff.Kernels;
using FastBlockDiff.Kernels.Cpu;

namespace FastBlockDiff.Tests;

public class BackendBasicsTests
{
    [Fact]
    public void AxpyAndSums()
    {
        var be = new CpuBackend();
        var x = be.AllocFloat(5); var y = be.AllocFloat(5);
        be.Upload(x, [1, 2, 3, 4, 5]); be.Fill(y, 1);
        be.Axpy(y, 2, x);
        Assert.Equal(5 * 1 + 2 * 15, be.Sum(y), 5);
        Assert.Equal(55, be.SumSquares(x), 5);
    }
}
