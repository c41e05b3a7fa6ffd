namespace FastBlockDiff.Engine.Formats;

/// <summary>
/// Crash-safe file replacement: the content is written to a temporary file in the target's
/// directory, flushed to disk (fsync), then renamed over the target. A reader therefore sees
/// either the old file or the complete new one, never a half-written file; if writing fails
/// the temporary file is removed and the old target is left untouched.
/// </summary>
public static class AtomicFile
{
    /// <summary>Writes <paramref name="path"/> atomically with the bytes produced by <paramref name="write"/>.</summary>
    public static void Write(string path, Action<Stream> write)
    {
        ArgumentNullException.ThrowIfNull(write);
        string full = Path.GetFullPath(path);
        string dir = Path.GetDirectoryName(full) ?? ".";
        if (!Directory.Exists(dir))
            throw new UserInputException($"cannot write '{path}': directory '{dir}' does not exist");
        if (Directory.Exists(full))
            throw new UserInputException($"cannot write '{path}': it is a directory");
        string temp = Path.Combine(dir, TempName(Path.GetFileName(full)));
        try
        {
            using (var fs = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                write(fs);
                fs.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException)   // permissions, a read-only or full file system
        {
            TryDelete(temp);
            throw new UserInputException($"cannot write '{path}': {e.Message}", e);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
    }

    /// <summary>Writes all bytes atomically.</summary>
    public static void WriteAllBytes(string path, ReadOnlySpan<byte> bytes)
    {
        byte[] copy = bytes.ToArray();
        Write(path, s => s.Write(copy));
    }

    /// <summary>Writes text (UTF-8, no BOM) atomically.</summary>
    public static void WriteAllText(string path, string text)
        => WriteAllBytes(path, new System.Text.UTF8Encoding(false).GetBytes(text));

    /// <summary>A fresh temp file name beside <paramref name="fileName"/>: ".NAME.PID.GUID.tmp" (hidden, owned by this process).</summary>
    public static string TempName(string fileName) => $".{fileName}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";

    /// <summary>The process id inside a name made by <see cref="TempName"/>, or null for any other name.</summary>
    public static int? TempOwner(string tempName)
    {
        if (!tempName.StartsWith('.') || !tempName.EndsWith(".tmp", StringComparison.Ordinal)) return null;
        var parts = tempName[..^4].Split('.');
        if (parts.Length < 4 || parts[^1].Length != 32 || !parts[^1].All(char.IsAsciiHexDigitLower)) return null;
        return int.TryParse(parts[^2], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int pid) && pid > 0 ? pid : null;
    }

    private static void TryDelete(string p)
    {
        try { if (File.Exists(p)) File.Delete(p); } catch { /* best effort */ }
    }
}
