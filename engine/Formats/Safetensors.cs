using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;

namespace FastBlockDiff.Engine.Formats;

/// <summary>Element types of the safetensors format.</summary>
public enum SafetensorsDType { BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64 }

/// <summary>One tensor entry of a safetensors header, validated against the file.</summary>
public sealed class SafetensorsTensorInfo
{
    internal SafetensorsTensorInfo(string name, SafetensorsDType dtype, long[] shape, long begin, long end, long elementCount)
    { Name = name; DType = dtype; Shape = shape; Begin = begin; End = end; ElementCount = elementCount; }

    public string Name { get; }
    public SafetensorsDType DType { get; }
    public long[] Shape { get; }
    /// <summary>Start of the data, relative to the start of the data section (data_offsets[0]).</summary>
    public long Begin { get; }
    /// <summary>End of the data (exclusive), relative to the data section (data_offsets[1]).</summary>
    public long End { get; }
    public long ByteLength => End - Begin;
    public long ElementCount { get; }
    /// <summary>The shape as int[] (every dimension fits in an int once validated for reading).</summary>
    public int[] ShapeInt32 => Shape.Select(d => checked((int)d)).ToArray();
    public override string ToString() => $"{Name} {DType}[{string.Join(",", Shape)}]";
}

/// <summary>A tensor to write: name, shape and data (F32, I64 or I32).</summary>
public sealed class SafetensorsTensorData
{
    private readonly ReadOnlyMemory<float> _f32;
    private readonly ReadOnlyMemory<long> _i64;
    private readonly ReadOnlyMemory<int> _i32;

    private SafetensorsTensorData(string name, SafetensorsDType dtype, int[] shape, long length,
                                  ReadOnlyMemory<float> f32 = default, ReadOnlyMemory<long> i64 = default, ReadOnlyMemory<int> i32 = default)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(shape);
        Name = name; DType = dtype; Shape = (int[])shape.Clone(); Length = length;
        _f32 = f32; _i64 = i64; _i32 = i32;
    }

    public string Name { get; }
    public SafetensorsDType DType { get; }
    public int[] Shape { get; }
    public long Length { get; }

    public static SafetensorsTensorData F32(string name, int[] shape, ReadOnlyMemory<float> data) => new(name, SafetensorsDType.F32, shape, data.Length, f32: data);
    public static SafetensorsTensorData I64(string name, int[] shape, ReadOnlyMemory<long> data) => new(name, SafetensorsDType.I64, shape, data.Length, i64: data);
    public static SafetensorsTensorData I32(string name, int[] shape, ReadOnlyMemory<int> data) => new(name, SafetensorsDType.I32, shape, data.Length, i32: data);

    internal ReadOnlySpan<byte> Bytes => DType switch
    {
        SafetensorsDType.F32 => MemoryMarshal.AsBytes(_f32.Span),
        SafetensorsDType.I64 => MemoryMarshal.AsBytes(_i64.Span),
        _ => MemoryMarshal.AsBytes(_i32.Span),
    };
}

/// <summary>
/// Reader and writer for the safetensors format: 8-byte little-endian header length N, N bytes
/// of UTF-8 JSON ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
/// optional "__metadata__": {string: string}}), then the raw little-endian data section.
/// <para>
/// <see cref="Read"/> validates the whole header against the file size before any tensor data is
/// read: header length, JSON shape, known dtype, non-negative shape, byte count = elements x
/// dtype size, offsets inside the data section, and no two tensors overlapping. Any problem is a
/// <see cref="UserInputException"/> naming the file (and the tensor). Tensor data is then read on
/// demand; F16 and BF16 (and F64) are converted to float32 by <see cref="ReadFloat32"/>.
/// </para>
/// </summary>
public sealed class SafetensorsFile : IDisposable
{
    /// <summary>Header lengths above this are rejected as corrupt (100 MB, as the reference implementation).</summary>
    public const long MaxHeaderLength = 100_000_000;
    public const string MetadataKey = "__metadata__";

    private readonly SafeFileHandle _handle;
    private readonly Dictionary<string, SafetensorsTensorInfo> _byName;
    private readonly long _dataStart;

    private SafetensorsFile(string path, SafeFileHandle handle, long dataStart, List<SafetensorsTensorInfo> tensors, Dictionary<string, string> metadata)
    {
        Path = path; _handle = handle; _dataStart = dataStart;
        Tensors = tensors;
        _byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        Metadata = metadata;
    }

    public string Path { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }
    /// <summary>Tensors in header order.</summary>
    public IReadOnlyList<SafetensorsTensorInfo> Tensors { get; }
    public IEnumerable<string> Names => Tensors.Select(t => t.Name);
    public bool Contains(string name) => _byName.ContainsKey(name);

    public SafetensorsTensorInfo this[string name] => _byName.TryGetValue(name, out var t) ? t
        : throw new UserInputException($"safetensors file '{Path}': no tensor named '{name}'");

    public void Dispose() => _handle.Dispose();

    private static readonly Dictionary<string, SafetensorsDType> DTypeByName =
        Enum.GetValues<SafetensorsDType>().ToDictionary(d => d.ToString(), StringComparer.Ordinal);

    public static int DTypeSize(SafetensorsDType d) => d switch
    {
        SafetensorsDType.BOOL or SafetensorsDType.U8 or SafetensorsDType.I8 => 1,
        SafetensorsDType.I16 or SafetensorsDType.U16 or SafetensorsDType.F16 or SafetensorsDType.BF16 => 2,
        SafetensorsDType.I32 or SafetensorsDType.U32 or SafetensorsDType.F32 => 4,
        _ => 8,
    };

    // ------------------------------------------------------------------ reading

    /// <summary>Opens and validates a safetensors file. Dispose the result to close the file.</summary>
    public static SafetensorsFile Read(string path)
    {
        if (!File.Exists(path)) throw new UserInputException($"safetensors file '{path}' does not exist");
        SafeFileHandle handle;
        try { handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new UserInputException($"cannot open safetensors file '{path}': {e.Message}", e); }
        return Read(path, handle);
    }

    /// <summary>Validates an already opened file (named <paramref name="path"/> in messages); the result owns <paramref name="handle"/>.</summary>
    public static SafetensorsFile Read(string path, SafeFileHandle handle)
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("safetensors I/O needs a little-endian machine");
        try
        {
            var (dataStart, tensors, meta) = ParseHeader(path, handle);
            return new SafetensorsFile(path, handle, dataStart, tensors, meta);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    private static (long, List<SafetensorsTensorInfo>, Dictionary<string, string>) ParseHeader(string path, SafeFileHandle handle)
    {
        long fileLength = RandomAccess.GetLength(handle);
        string where = $"safetensors file '{path}'";
        if (fileLength < 8)
            throw new UserInputException($"{where} is truncated: {fileLength} bytes, shorter than the 8-byte header length");
        Span<byte> lenBytes = stackalloc byte[8];
        ReadExactly(handle, lenBytes, 0, path, "header length");
        ulong headerLen = BinaryPrimitives.ReadUInt64LittleEndian(lenBytes);
        if (headerLen > MaxHeaderLength)
            throw new UserInputException($"{where}: header length {headerLen} is absurd (limit {MaxHeaderLength}); the file is corrupt or not safetensors");
        if ((long)headerLen > fileLength - 8)
            throw new UserInputException($"{where} is truncated: header length {headerLen} runs past the end of the file ({fileLength} bytes)");
        if (headerLen < 2)
            throw new UserInputException($"{where}: header length {headerLen} is too small to hold a JSON object");
        var header = new byte[headerLen];
        ReadExactly(handle, header, 8, path, "header");
        long dataStart = 8 + (long)headerLen;
        long dataLength = fileLength - dataStart;

        // System.Text.Json checks UTF-8 only when a string is decoded, so a bad byte would surface later as an
        // InvalidOperationException; check the whole header up front instead.
        if (!System.Text.Unicode.Utf8.IsValid(header))
            throw new UserInputException($"{where}: header is not valid UTF-8; the file is corrupt or not safetensors");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(header); }
        catch (JsonException e) { throw new UserInputException($"{where}: header is not valid JSON: {e.Message}", e); }
        using var _ = doc;
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
            throw new UserInputException($"{where}: header is not a JSON object");

        var tensors = new List<SafetensorsTensorInfo>();
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var prop in doc.RootElement.EnumerateObject())
        {
            if (!seen.Add(prop.Name))
                throw new UserInputException($"{where}: header names '{prop.Name}' twice");
            if (prop.Name == MetadataKey)
            {
                if (prop.Value.ValueKind != JsonValueKind.Object)
                    throw new UserInputException($"{where}: {MetadataKey} must be an object of strings");
                foreach (var m in prop.Value.EnumerateObject())
                {
                    if (m.Value.ValueKind != JsonValueKind.String)
                        throw new UserInputException($"{where}: {MetadataKey} entry '{m.Name}' is not a string");
                    metadata[m.Name] = m.Value.GetString()!;
                }
                continue;
            }
            tensors.Add(ParseTensor(where, prop, dataLength));
        }

        // No two tensors may share bytes (empty tensors cannot overlap anything).
        var sorted = tensors.Where(t => t.ByteLength > 0).OrderBy(t => t.Begin).ToList();
        for (int i = 1; i < sorted.Count; i++)
            if (sorted[i].Begin < sorted[i - 1].End)
                throw new UserInputException($"{where}: tensors '{sorted[i - 1].Name}' [{sorted[i - 1].Begin}, {sorted[i - 1].End}) and '{sorted[i].Name}' [{sorted[i].Begin}, {sorted[i].End}) overlap");
        return (dataStart, tensors, metadata);
    }

    private static SafetensorsTensorInfo ParseTensor(string where, JsonProperty prop, long dataLength)
    {
        string name = prop.Name;
        string at = $"{where}, tensor '{name}'";
        var v = prop.Value;
        if (v.ValueKind != JsonValueKind.Object)
            throw new UserInputException($"{at}: entry is not an object with dtype, shape and data_offsets");
        if (!v.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String)
            throw new UserInputException($"{at}: missing or non-string 'dtype'");
        if (!DTypeByName.TryGetValue(dt.GetString()!, out var dtype))
            throw new UserInputException($"{at}: unknown dtype '{dt.GetString()}'");
        if (!v.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array)
            throw new UserInputException($"{at}: missing or non-array 'shape'");
        var shape = new long[sh.GetArrayLength()];
        long elements = 1;
        int k = 0;
        foreach (var d in sh.EnumerateArray())
        {
            if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long dim) || dim < 0)
                throw new UserInputException($"{at}: shape entry {d} is not a non-negative integer");
            shape[k++] = dim;
            try { elements = checked(elements * dim); }
            catch (OverflowException) { throw new UserInputException($"{at}: shape [{string.Join(",", shape.Take(k))}...] has too many elements"); }
        }
        if (!v.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
            throw new UserInputException($"{at}: 'data_offsets' must be an array [begin, end]");
        long begin = OffsetValue(at, off[0]), end = OffsetValue(at, off[1]);
        if (end < begin)
            throw new UserInputException($"{at}: data_offsets [{begin}, {end}] end before they begin");
        if (end > dataLength)
            throw new UserInputException($"{at}: data_offsets [{begin}, {end}] run past the end of the data section ({dataLength} bytes); the file is truncated or corrupt");
        long expected;
        try { expected = checked(elements * DTypeSize(dtype)); }
        catch (OverflowException) { throw new UserInputException($"{at}: shape [{string.Join(",", shape)}] is too large"); }
        if (end - begin != expected)
            throw new UserInputException($"{at}: {dtype}[{string.Join(",", shape)}] needs {expected} bytes but data_offsets [{begin}, {end}] hold {end - begin}");
        return new SafetensorsTensorInfo(name, dtype, shape, begin, end, elements);
    }

    private static long OffsetValue(string at, JsonElement e)
    {
        if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt64(out long x) || x < 0)
            throw new UserInputException($"{at}: data offset {e} is not a non-negative integer");
        return x;
    }

    private static void ReadExactly(SafeFileHandle h, Span<byte> dest, long offset, string path, string what)
    {
        while (dest.Length > 0)
        {
            int n = RandomAccess.Read(h, dest, offset);
            if (n <= 0) throw new UserInputException($"safetensors file '{path}' is truncated: unexpected end of file while reading {what}");
            dest = dest[n..]; offset += n;
        }
    }

    private void ReadBytes(SafetensorsTensorInfo t, Span<byte> dest, long byteOffsetInTensor)
        => ReadExactly(_handle, dest, _dataStart + t.Begin + byteOffsetInTensor, Path, $"tensor '{t.Name}'");

    private SafetensorsTensorInfo ForArray(string name)
    {
        var t = this[name];
        if (t.ElementCount > Array.MaxLength)
            throw new UserInputException($"safetensors file '{Path}', tensor '{name}': {t.ElementCount} elements do not fit in one array");
        return t;
    }

    /// <summary>Raw little-endian bytes of a tensor.</summary>
    public byte[] ReadRaw(string name)
    {
        var t = this[name];
        if (t.ByteLength > Array.MaxLength)
            throw new UserInputException($"safetensors file '{Path}', tensor '{name}': {t.ByteLength} bytes do not fit in one array");
        var bytes = new byte[t.ByteLength];
        ReadBytes(t, bytes, 0);
        return bytes;
    }

    /// <summary>Reads a floating-point tensor (F32, F16, BF16, F64) as float32.</summary>
    public float[] ReadFloat32(string name)
    {
        var t = ForArray(name);
        var result = new float[t.ElementCount];
        const int Chunk = 1 << 20; // elements per read for converted types
        switch (t.DType)
        {
            case SafetensorsDType.F32:
                {
                    var bytes = MemoryMarshal.AsBytes(result.AsSpan());
                    for (long done = 0; done < bytes.Length;)
                    {
                        int n = (int)Math.Min(1 << 30, bytes.Length - done);
                        ReadBytes(t, bytes.Slice((int)done, n), done);
                        done += n;
                    }
                    break;
                }
            case SafetensorsDType.F16:
            case SafetensorsDType.BF16:
                {
                    var buf = new ushort[Math.Min(Chunk, result.Length)];
                    bool bf = t.DType == SafetensorsDType.BF16;
                    for (int i = 0; i < result.Length;)
                    {
                        int n = Math.Min(buf.Length, result.Length - i);
                        ReadBytes(t, MemoryMarshal.AsBytes(buf.AsSpan(0, n)), 2L * i);
                        for (int j = 0; j < n; j++)
                            result[i + j] = bf ? BitConverter.Int32BitsToSingle(buf[j] << 16) : (float)BitConverter.UInt16BitsToHalf(buf[j]);
                        i += n;
                    }
                    break;
                }
            case SafetensorsDType.F64:
                {
                    var buf = new double[Math.Min(Chunk, result.Length)];
                    for (int i = 0; i < result.Length;)
                    {
                        int n = Math.Min(buf.Length, result.Length - i);
                        ReadBytes(t, MemoryMarshal.AsBytes(buf.AsSpan(0, n)), 8L * i);
                        for (int j = 0; j < n; j++) result[i + j] = (float)buf[j];
                        i += n;
                    }
                    break;
                }
            default:
                throw new UserInputException($"safetensors file '{Path}', tensor '{name}' has dtype {t.DType}; expected a floating-point tensor (F32, F16, BF16, F64)");
        }
        return result;
    }

    /// <summary>Reads an integer tensor (I64, I32, I16, I8, U8, U16, U32, BOOL; U64 values must fit in long) as int64.</summary>
    public long[] ReadInt64(string name)
    {
        var t = ForArray(name);
        if (t.DType is SafetensorsDType.F16 or SafetensorsDType.BF16 or SafetensorsDType.F32 or SafetensorsDType.F64)
            throw new UserInputException($"safetensors file '{Path}', tensor '{name}' has dtype {t.DType}; expected an integer tensor");
        var result = new long[t.ElementCount];
        if (t.DType is SafetensorsDType.I64 or SafetensorsDType.U64)
        {
            var bytes = MemoryMarshal.AsBytes(result.AsSpan());
            for (long done = 0; done < bytes.Length;)
            {
                int n = (int)Math.Min(1 << 30, bytes.Length - done);
                ReadBytes(t, bytes.Slice((int)done, n), done);
                done += n;
            }
            if (t.DType == SafetensorsDType.U64)
                foreach (long x in result)
                    if (x < 0) throw new UserInputException($"safetensors file '{Path}', tensor '{name}': U64 value {(ulong)x} does not fit in int64");
            return result;
        }
        if (t.ByteLength > Array.MaxLength)
            throw new UserInputException($"safetensors file '{Path}', tensor '{name}' is too large");
        var raw = ReadRaw(name);
        for (int i = 0; i < result.Length; i++)
        {
            result[i] = t.DType switch
            {
                SafetensorsDType.I32 => BinaryPrimitives.ReadInt32LittleEndian(raw.AsSpan(4 * i)),
                SafetensorsDType.U32 => BinaryPrimitives.ReadUInt32LittleEndian(raw.AsSpan(4 * i)),
                SafetensorsDType.I16 => BinaryPrimitives.ReadInt16LittleEndian(raw.AsSpan(2 * i)),
                SafetensorsDType.U16 => BinaryPrimitives.ReadUInt16LittleEndian(raw.AsSpan(2 * i)),
                SafetensorsDType.I8 => (sbyte)raw[i],
                _ => raw[i], // U8, BOOL
            };
        }
        return result;
    }

    /// <summary>Reads every floating-point tensor as float32, by name (integer tensors are skipped).</summary>
    public Dictionary<string, float[]> ReadAllFloat32()
        => Tensors.Where(t => t.DType is SafetensorsDType.F32 or SafetensorsDType.F16 or SafetensorsDType.BF16 or SafetensorsDType.F64)
                  .ToDictionary(t => t.Name, t => ReadFloat32(t.Name), StringComparer.Ordinal);

    /// <summary>Reads an integer tensor as int32 (values must fit).</summary>
    public int[] ReadInt32(string name)
    {
        var l = ReadInt64(name);
        var r = new int[l.Length];
        for (int i = 0; i < l.Length; i++)
        {
            if (l[i] < int.MinValue || l[i] > int.MaxValue)
                throw new UserInputException($"safetensors file '{Path}', tensor '{name}': value {l[i]} does not fit in int32");
            r[i] = (int)l[i];
        }
        return r;
    }

    // ------------------------------------------------------------------ writing

    /// <summary>Writes float32 tensors (atomically: temp file, fsync, rename).</summary>
    public static void Write(string path, IEnumerable<(string name, int[] shape, ReadOnlyMemory<float> data)> tensors,
                             IReadOnlyDictionary<string, string>? metadata = null)
        => Write(path, tensors.Select(t => SafetensorsTensorData.F32(t.name, t.shape, t.data)), metadata);

    /// <summary>Writes int64 tensors (atomically).</summary>
    public static void Write(string path, IEnumerable<(string name, int[] shape, ReadOnlyMemory<long> data)> tensors,
                             IReadOnlyDictionary<string, string>? metadata = null)
        => Write(path, tensors.Select(t => SafetensorsTensorData.I64(t.name, t.shape, t.data)), metadata);

    /// <summary>
    /// Writes tensors of mixed dtypes (F32, I64, I32) in the given order, with an optional
    /// "__metadata__" map. Everything is validated before the file is touched; the file is
    /// written to a temporary file in the same directory, fsynced and renamed over
    /// <paramref name="path"/>, so a failure leaves any previous file intact.
    /// </summary>
    public static void Write(string path, IEnumerable<SafetensorsTensorData> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var (headerBytes, list) = Prepare(path, tensors, metadata);
        AtomicFile.Write(path, s => WriteTo(s, headerBytes, list));
    }

    /// <summary>
    /// Validates the tensors and returns a writer of the whole file to a stream (for callers that publish several
    /// files together); <paramref name="path"/> only names the file in messages.
    /// </summary>
    public static Action<Stream> Writer(string path, IEnumerable<SafetensorsTensorData> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var (headerBytes, list) = Prepare(path, tensors, metadata);
        return s => WriteTo(s, headerBytes, list);
    }

    static void WriteTo(Stream s, byte[] headerBytes, List<SafetensorsTensorData> list)
    {
        Span<byte> len = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)headerBytes.Length);
        s.Write(len);
        s.Write(headerBytes);
        foreach (var t in list) s.Write(t.Bytes);
    }

    static (byte[] Header, List<SafetensorsTensorData> Tensors) Prepare(string path, IEnumerable<SafetensorsTensorData> tensors, IReadOnlyDictionary<string, string>? metadata)
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("safetensors I/O needs a little-endian machine");
        var list = tensors.ToList();
        var names = new HashSet<string>(StringComparer.Ordinal);
        var header = new MemoryStream();
        using (var w = new Utf8JsonWriter(header))
        {
            w.WriteStartObject();
            if (metadata != null && metadata.Count > 0)
            {
                w.WriteStartObject(MetadataKey);
                foreach (var kv in metadata) w.WriteString(kv.Key, kv.Value);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var t in list)
            {
                if (string.IsNullOrEmpty(t.Name) || t.Name == MetadataKey)
                    throw new ArgumentException($"safetensors '{path}': invalid tensor name '{t.Name}'");
                if (!names.Add(t.Name))
                    throw new ArgumentException($"safetensors '{path}': tensor name '{t.Name}' used twice");
                long elements = 1;
                foreach (int d in t.Shape)
                {
                    if (d < 0) throw new ArgumentException($"safetensors '{path}', tensor '{t.Name}': negative dimension in shape [{string.Join(",", t.Shape)}]");
                    elements = checked(elements * d);
                }
                if (elements != t.Length)
                    throw new ArgumentException($"safetensors '{path}', tensor '{t.Name}': shape [{string.Join(",", t.Shape)}] has {elements} elements but the data has {t.Length}");
                long bytes = elements * DTypeSize(t.DType);
                w.WriteStartObject(t.Name);
                w.WriteString("dtype", t.DType.ToString());
                w.WriteStartArray("shape");
                foreach (int d in t.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset); w.WriteNumberValue(offset + bytes);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += bytes;
            }
            w.WriteEndObject();
        }
        // Pad the header with spaces so the data section starts 8-byte aligned.
        while (header.Length % 8 != 0) header.WriteByte((byte)' ');
        return (header.ToArray(), list);
    }
}
