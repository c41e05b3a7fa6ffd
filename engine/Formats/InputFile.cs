using System.Runtime.InteropServices;

namespace FastBlockDiff.Engine.Formats;

/// <summary>
/// Checks a path the engine is about to read: it must be a regular file. A FIFO blocks the reader until some
/// writer appears, a character device such as /dev/zero never ends and a socket cannot be opened at all, so
/// each is refused with a message before it is opened. The file type comes from statx(2) on Linux; elsewhere
/// only existence is checked.
/// </summary>
public static class InputFile
{
    /// <summary>Throws a <see cref="UserInputException"/> naming <paramref name="what"/> unless <paramref name="path"/> is a regular file.</summary>
    public static void RequireRegular(string path, string what)
    {
        if (Directory.Exists(path)) throw new UserInputException($"{what} '{path}' is a directory, not a file");
        if (!File.Exists(path)) throw new UserInputException($"{what} '{path}' does not exist");
        string? kind = NonRegularKind(path);
        if (kind != null)
            throw new UserInputException($"{what} '{path}' is a {kind}, not a regular file: reading it could block or never end; copy the data into a file");
    }

    /// <summary>"FIFO", "character device", ... for a path that exists but is not a regular file; null for a regular file or when unknown.</summary>
    public static string? NonRegularKind(string path)
    {
        if (!OperatingSystem.IsLinux()) return null;
        var buf = new byte[StatxSize];
        try
        {
            if (statx(AtFdCwd, path, 0, StatxType, buf) != 0) return null;   // follows symbolic links, as open(2) does
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { return null; }
        int mode = BitConverter.ToUInt16(buf, StatxModeOffset) & 0xF000;
        return mode switch
        {
            0x8000 or 0x4000 => null,   // regular file, directory
            0x1000 => "FIFO (named pipe)",
            0x2000 => "character device",
            0x6000 => "block device",
            0xC000 => "socket",
            _ => "special file",
        };
    }

    // struct statx has the same layout on every Linux architecture: stx_mode is a u16 at byte 28 of 256.
    const int StatxSize = 256, StatxModeOffset = 28, AtFdCwd = -100;
    const uint StatxType = 1;

    [DllImport("libc.so.6", SetLastError = true)]
    static extern int statx(int dirfd, [MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags, uint mask, byte[] buffer);
}
