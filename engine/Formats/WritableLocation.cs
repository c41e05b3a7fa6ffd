using FastBlockDiff.Engine.Model;

namespace FastBlockDiff.Engine.Formats;

/// <summary>
/// Checks, before any long work starts, that a directory the engine will write into can be created, written
/// and holds enough free space, so that a bad --out is found in the first second and not at the first save.
/// Nothing is left behind: a directory that does not exist yet is not created, and the write probe is deleted.
/// </summary>
public static class WritableLocation
{
    /// <summary>
    /// Throws a <see cref="UserInputException"/> naming <paramref name="what"/> unless <paramref name="dir"/> is (or can be
    /// created as) a writable directory on a file system with at least <paramref name="bytesNeeded"/> bytes free.
    /// </summary>
    public static void RequireDirectory(string dir, string what, long bytesNeeded)
    {
        if (string.IsNullOrWhiteSpace(dir)) throw new UserInputException($"{what}: empty path");
        string full;
        try { full = Path.GetFullPath(dir); }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException)
        { throw new UserInputException($"{what} '{dir}' is not a valid path: {e.Message}"); }
        if (File.Exists(full)) throw new UserInputException($"{what} '{dir}' is a file, not a directory: give a directory path");
        string existing = full;
        while (!Directory.Exists(existing))
        {
            if (File.Exists(existing))
                throw new UserInputException($"{what} '{dir}': '{existing}' is a file, so no directory can be created under it");
            existing = Path.GetDirectoryName(existing) ?? throw new UserInputException($"{what} '{dir}': no part of the path exists");
        }
        Probe(existing, dir, what);
        RequireFreeSpace(existing, dir, what, bytesNeeded);
    }

    /// <summary>As <see cref="RequireDirectory"/> for the directory that will hold <paramref name="file"/>; a directory at the file's path is refused.</summary>
    public static void RequireFile(string file, string what, long bytesNeeded)
    {
        if (string.IsNullOrWhiteSpace(file)) throw new UserInputException($"{what}: empty path");
        if (Directory.Exists(file)) throw new UserInputException($"{what} '{file}' is a directory: give a file path");
        if (File.Exists(file) && InputFile.NonRegularKind(file) is { } kind)
            throw new UserInputException($"{what} '{file}' is a {kind}, not a regular file");
        string dir = Path.GetDirectoryName(Path.GetFullPath(file)) ?? ".";
        RequireDirectory(dir, what, bytesNeeded);
    }

    /// <summary>Bytes free to this user on the file system holding <paramref name="existingDir"/>; null when unknown.</summary>
    public static long? FreeBytes(string existingDir)
    {
        try { return new DriveInfo(existingDir).AvailableFreeSpace; }
        catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException) { return null; }
    }

    static void Probe(string existingDir, string dir, string what)
    {
        string probe = Path.Combine(existingDir, $".fastblockdiff-write-test.{Environment.ProcessId}.{Guid.NewGuid():N}");
        try
        {
            using var fs = new FileStream(probe, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose);
            fs.WriteByte(0);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UserInputException($"{what} '{dir}' is not writable ({e.Message.TrimEnd('.')}): choose a directory you can write to");
        }
    }

    static void RequireFreeSpace(string existingDir, string dir, string what, long bytesNeeded)
    {
        if (bytesNeeded <= 0 || FreeBytes(existingDir) is not { } free) return;
        if (free < bytesNeeded)
            throw new UserInputException($"{what} '{dir}' needs {MemoryEstimate.FormatBytes(bytesNeeded)} but its file system has {MemoryEstimate.FormatBytes(free)} free: free space or choose another location");
    }
}
