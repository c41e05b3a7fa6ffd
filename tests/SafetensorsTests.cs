using System.Buffers.Binary;
using System.Text;
using FastBlockDiff.Engine;
using FastBlockDiff.Engine.Formats;

namespace FastBlockDiff.Tests;

public class SafetensorsTests
{
    /// <summary>Writes a safetensors file by hand: header JSON as given, then the data bytes.</summary>
    private static string Raw(string dir, string headerJson, byte[] data, string name = "t.safetensors", long? headerLenOverride = null)
    {
        string path = Path.Combine(dir, name);
        var header = Encoding.UTF8.GetBytes(headerJson);
        using var fs = File.Create(path);
        var len = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)(headerLenOverride ?? header.Length));
        fs.Write(len); fs.Write(header); fs.Write(data);
        return path;
    }

    [Fact]
    public void RoundTripIsExact()
    {
        using var tmp = new TempDir();
        string path = Path.Combine(tmp.Path, "w.safetensors");
        var rng = new Random(1);
        float[] a = Enumerable.Range(0, 24).Select(_ => (float)rng.NextDouble() * 2 - 1).ToArray();
        a[0] = float.Epsilon; a[1] = -0f; a[2] = float.MaxValue; a[3] = float.NaN;
        long[] steps = [long.MinValue, -1, 0, 42, long.MaxValue];
        var meta = new Dictionary<string, string> { ["format"] = "pt", ["step"] = "7" };
        SafetensorsFile.Write(path,
        [
            SafetensorsTensorData.F32("backbone.a", [2, 3, 4], a),
            SafetensorsTensorData.F32("scalar", [], new float[] { 3.5f }),
            SafetensorsTensorData.F32("empty", [0, 3], Array.Empty<float>()),
            SafetensorsTensorData.I64("state.step", [5], steps),
            SafetensorsTensorData.I32("ints", [2], new[] { -7, 9 }),
        ], meta);

        using var f = SafetensorsFile.Read(path);
        Assert.Equal(meta, f.Metadata);
        Assert.Equal(["backbone.a", "scalar", "empty", "state.step", "ints"], f.Names);
        Assert.Equal([2L, 3, 4], f["backbone.a"].Shape);
        Assert.Equal(SafetensorsDType.F32, f["backbone.a"].DType);
        var back = f.ReadFloat32("backbone.a");
        Assert.Equal(a.Select(BitConverter.SingleToInt32Bits), back.Select(BitConverter.SingleToInt32Bits));
        Assert.Equal([3.5f], f.ReadFloat32("scalar"));
        Assert.Empty(f.ReadFloat32("empty"));
        Assert.Equal(steps, f.ReadInt64("state.step"));
        Assert.Equal([-7, 9], f.ReadInt32("ints"));
        Assert.Equal(["backbone.a", "scalar", "empty"], f.ReadAllFloat32().Keys);
        Assert.Equal(0, (8 + BinaryPrimitives.ReadInt64LittleEndian(File.ReadAllBytes(path).AsSpan(0, 8))) % 8);

        // The tuple overloads.
        string p2 = Path.Combine(tmp.Path, "x.safetensors");
        SafetensorsFile.Write(p2, new[] { ("w", new[] { 2, 2 }, (ReadOnlyMemory<float>)new float[] { 1, 2, 3, 4 }) });
        using (var g = SafetensorsFile.Read(p2)) Assert.Equal([1f, 2, 3, 4], g.ReadFloat32("w"));
        SafetensorsFile.Write(p2, new[] { ("n", new[] { 1 }, (ReadOnlyMemory<long>)new long[] { 5 }) });
        using (var g = SafetensorsFile.Read(p2)) { Assert.Equal([5L], g.ReadInt64("n")); Assert.Empty(g.Metadata); }
    }

    [Fact]
    public void HalfPrecisionTypesConvertToFloat32()
    {
        using var tmp = new TempDir();
        ushort[] f16 = [0x3C00, 0xC000, 0x3800, 0x7C00, 0x0001]; // 1, -2, 0.5, +inf, smallest subnormal
        ushort[] bf16 = [0x3F80, 0xC020, 0x4049, 0xFF80];        // 1, -2.5, 3.140625, -inf
        double[] f64 = [1.5, -1e-3];
        var data = new List<byte>();
        foreach (var h in f16) data.AddRange(BitConverter.GetBytes(h));
        foreach (var h in bf16) data.AddRange(BitConverter.GetBytes(h));
        foreach (var d in f64) data.AddRange(BitConverter.GetBytes(d));
        string header = "{\"h\":{\"dtype\":\"F16\",\"shape\":[5],\"data_offsets\":[0,10]}," +
                        "\"b\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[10,18]}," +
                        "\"d\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[18,34]}}";
        using var f = SafetensorsFile.Read(Raw(tmp.Path, header, data.ToArray()));
        Assert.Equal([1f, -2f, 0.5f, float.PositiveInfinity, (float)BitConverter.UInt16BitsToHalf(1)], f.ReadFloat32("h"));
        Assert.Equal([1f, -2.5f, 3.140625f, float.NegativeInfinity], f.ReadFloat32("b"));
        Assert.Equal([1.5f, -1e-3f], f.ReadFloat32("d"));
        var e = Assert.Throws<UserInputException>(() => f.ReadInt64("b"));
        Assert.Contains("'b'", e.Message);
    }

    private static UserInputException Rejects(string path)
        => Assert.Throws<UserInputException>(() => { using var _ = SafetensorsFile.Read(path); });

    [Fact]
    public void TruncatedFileIsRejectedNamingTheTensor()
    {
        using var tmp = new TempDir();
        string path = Path.Combine(tmp.Path, "w.safetensors");
        SafetensorsFile.Write(path, [SafetensorsTensorData.F32("a", [4], new float[4]), SafetensorsTensorData.F32("layer.b", [4], new float[4])]);
        var bytes = File.ReadAllBytes(path);
        File.WriteAllBytes(path, bytes[..^3]);
        var e = Rejects(path);
        Assert.Contains("w.safetensors", e.Message);
        Assert.Contains("layer.b", e.Message);
        Assert.Contains("past the end", e.Message);

        File.WriteAllBytes(path, bytes[..5]);
        Assert.Contains("truncated", Rejects(path).Message);
        File.WriteAllBytes(path, bytes[..40]);
        Assert.Contains("truncated", Rejects(path).Message);
    }

    [Fact]
    public void BadHeaderLengthsAreRejected()
    {
        using var tmp = new TempDir();
        string hdr = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
        var e = Rejects(Raw(tmp.Path, hdr, new byte[4], headerLenOverride: hdr.Length + 100));
        Assert.Contains("past the end of the file", e.Message);
        e = Rejects(Raw(tmp.Path, hdr, new byte[4], headerLenOverride: long.MaxValue));
        Assert.Contains("absurd", e.Message);
        e = Rejects(Raw(tmp.Path, "[1,2]", []));
        Assert.Contains("not a JSON object", e.Message);
        e = Rejects(Raw(tmp.Path, "{\"a\":", []));
        Assert.Contains("not valid JSON", e.Message);
        e = Assert.Throws<UserInputException>(() => SafetensorsFile.Read(Path.Combine(tmp.Path, "missing.safetensors")));
        Assert.Contains("missing.safetensors", e.Message);
    }

    [Fact]
    public void BadOffsetsShapesAndDtypesAreRejected()
    {
        using var tmp = new TempDir();
        (string header, int dataBytes, string expect)[] cases =
        [
            ("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlap"),
            ("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "past the end"),
            ("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "needs 12 bytes"),
            ("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "end before"),
            ("{\"a\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "unknown dtype"),
            ("{\"a\":{\"dtype\":\"BOOL,U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 8, "unknown dtype"),
            ("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "shape"),
            ("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, "data_offsets"),
            ("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 8, "too"),
            ("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "twice"),
            ("{\"__metadata__\":{\"k\":1}}", 0, "__metadata__"),
        ];
        foreach (var (header, n, expect) in cases)
        {
            var e = Rejects(Raw(tmp.Path, header, new byte[n]));
            Assert.Contains(expect, e.Message);
            Assert.Contains("t.safetensors", e.Message);
        }
    }

    [Fact]
    public void FailedWriteLeavesTheOldFileIntact()
    {
        using var tmp = new TempDir();
        string path = Path.Combine(tmp.Path, "ckpt.safetensors");
        SafetensorsFile.Write(path, [SafetensorsTensorData.F32("a", [2], new float[] { 1, 2 })]);
        var before = File.ReadAllBytes(path);

        Assert.Throws<ArgumentException>(() => SafetensorsFile.Write(path,
            [SafetensorsTensorData.F32("a", [2], new float[] { 3, 4 }), SafetensorsTensorData.F32("b", [3], new float[] { 1, 2 })]));
        Assert.Equal(before, File.ReadAllBytes(path));

        Assert.Throws<InvalidOperationException>(() => AtomicFile.Write(path, s =>
        {
            s.Write(new byte[1000]);
            throw new InvalidOperationException("disk on fire");
        }));
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Equal(["ckpt.safetensors"], Directory.GetFiles(tmp.Path).Select(Path.GetFileName));

        AtomicFile.WriteAllText(path, "replaced");
        Assert.Equal("replaced", File.ReadAllText(path));
        Assert.Single(Directory.GetFiles(tmp.Path));
    }
}

file sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("fbd-st-").FullName;
    public void Dispose() { try { Directory.Delete(Path, true); } catch { } }
}
