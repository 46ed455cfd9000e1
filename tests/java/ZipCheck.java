// Reads a ZIP archive with the JDK's own readers and prints what they extracted, one entry
// per line: "<size> <crc32 hex> <mtime seconds or -> <name>", where size and CRC-32 are
// computed from the bytes the reader returned (not copied from the headers).
//
//   java ZipCheck zipfile ARCHIVE   java.util.zip.ZipFile (central directory, random access)
//   java ZipCheck stream            java.util.zip.ZipInputStream over standard input
//
// Any exception ends the program with status 1 and its message on standard error.
import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.attribute.FileTime;
import java.util.Enumeration;
import java.util.zip.CRC32;
import java.util.zip.ZipEntry;
import java.util.zip.ZipFile;
import java.util.zip.ZipInputStream;

public final class ZipCheck {
    private static final byte[] BUF = new byte[1 << 20];

    public static void main(String[] args) throws IOException {
        PrintStream out = new PrintStream(
                new BufferedOutputStream(System.out, 1 << 16), false, StandardCharsets.UTF_8);
        if (args.length == 2 && args[0].equals("zipfile")) {
            try (ZipFile zip = new ZipFile(args[1], StandardCharsets.UTF_8)) {
                Enumeration<? extends ZipEntry> entries = zip.entries();
                while (entries.hasMoreElements()) {
                    ZipEntry entry = entries.nextElement();
                    try (InputStream in = zip.getInputStream(entry)) {
                        report(out, entry, in);
                    }
                }
            }
        } else if (args.length == 1 && args[0].equals("stream")) {
            InputStream stdin = new BufferedInputStream(System.in, 1 << 20);
            try (ZipInputStream zip = new ZipInputStream(stdin, StandardCharsets.UTF_8)) {
                ZipEntry entry;
                while ((entry = zip.getNextEntry()) != null) {
                    report(out, entry, zip);
                }
            }
        } else {
            System.err.println("usage: ZipCheck zipfile ARCHIVE | ZipCheck stream < ARCHIVE");
            System.exit(2);
        }
        out.flush();
        if (out.checkError()) {
            System.exit(1);
        }
    }

    private static void report(PrintStream out, ZipEntry entry, InputStream in) throws IOException {
        CRC32 crc = new CRC32();
        long size = 0;
        int n;
        while ((n = in.read(BUF)) != -1) {
            crc.update(BUF, 0, n);
            size += n;
        }
        FileTime mtime = entry.getLastModifiedTime();
        String hex = Long.toHexString(crc.getValue());
        StringBuilder line = new StringBuilder(64).append(size).append(' ');
        line.append("00000000", hex.length(), 8).append(hex).append(' ');
        line.append(mtime == null ? "-" : Long.toString(mtime.toMillis() / 1000));
        out.append(line.append(' ').append(entry.getName()).append('\n'));
    }
}
