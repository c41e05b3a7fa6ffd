using System.Runtime.Intrinsics;

namespace FastBlockDiff.Kernels.Cpu;

/// <summary>
/// e^x on 16 float lanes, in float arithmetic (the runtime's Vector512.Exp widens to double, half the speed), for the
/// softmax numerators e^(x - max) of the cross-entropy. x = n·ln2 + r with n = round(x·log2 e) and |r| ≤ ln2/2
/// (ln2 split in a high part exact in float and a low part, so that r carries no cancellation error); e^r by its
/// Taylor polynomial of degree 7 (truncation error ≤ r⁸/8! ≈ 5e-9 relative) in Horner form with FMAs; 2^n written
/// into the exponent field. Relative error about 1e-7 (≈ 1 ulp) for x in [-87.3, 88.3]; below -87.3, where e^x leaves
/// the normal floats, the result is 0 (−∞ gives 0); NaN stays NaN; above 88.3 (n = 128) it is +∞.
/// </summary>
public static class SimdExp
{
    const float Log2E = 1.44269504088896341f;
    const float Ln2High = 0.693145751953125f;          // ln 2 to 16 significant bits: n·Ln2High is exact for |n| < 256
    const float Ln2Low = 1.42860682030941723212e-6f;   // ln 2 - Ln2High
    const float RoundingShift = 12582912f;              // 1.5·2^23: adding it rounds to an integer held in the low mantissa bits
    const float Lowest = -87.3f;                        // e^-87.3 ≈ 1.2e-38, the smallest normal float's neighbourhood

    public static Vector512<float> Exp(Vector512<float> x)
    {
        var underflow = Vector512.LessThan(x, Vector512.Create(Lowest));
        x = Vector512.ConditionalSelect(underflow, Vector512.Create(Lowest), x);
        var shifted = Vector512.FusedMultiplyAdd(x, Vector512.Create(Log2E), Vector512.Create(RoundingShift));
        var n = shifted - Vector512.Create(RoundingShift);
        var r = Vector512.FusedMultiplyAdd(n, Vector512.Create(-Ln2High), x);
        r = Vector512.FusedMultiplyAdd(n, Vector512.Create(-Ln2Low), r);
        var p = Vector512.Create(1f / 5040);
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1f / 720));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1f / 120));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1f / 24));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(1f / 6));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(0.5f));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512<float>.One);
        p = Vector512.FusedMultiplyAdd(p, r, Vector512<float>.One);
        // the integer n sits in the low bits of shifted's pattern (0x4B400000 + n): move n + 127 into the exponent field
        var twoToN = ((shifted.AsInt32() - Vector512.Create(0x4B400000 - 127)) << 23).AsSingle();
        return Vector512.AndNot(p * twoToN, underflow);
    }
}
