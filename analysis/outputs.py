"""Writing the analysis scripts' outputs (plots, exported state dicts): --out checked before any
work, then written atomically.

check_out(path, formats) ends the script with a message naming the path and the fix when the
folder --out names does not exist or is not writable (found before minutes of loading and
plotting, not after), or,
for images, when the extension is not one of png, pdf, svg (matplotlib would silently append
.png to a name without one, so the file written is not the one named, and raise a traceback on
an unknown one). write_atomic(path, write) has write(tmp) write a temporary file in --out's
folder, then os.replace()s it onto --out: a reader (a LaTeX build, a notebook) never sees a
half-written file, and a failed or interrupted write leaves the old output as it was (a
symbolic link --out is written through, an existing file keeps its mode)."""
import os
import tempfile

IMAGE_FORMATS = ("png", "pdf", "svg")


def check_out(path, formats=None):
    """Ends the script unless path can be written: its folder exists and, with formats, its
    extension is one of them (case-insensitive). Returns the format (lower case) or None."""
    folder = os.path.dirname(os.path.realpath(path)) or "."
    if not os.path.isdir(folder):
        raise SystemExit(f"--out {path}: the folder {folder} does not exist; create it "
                         f"(mkdir -p {folder}) or give an --out in an existing folder")
    if os.path.isdir(path):
        raise SystemExit(f"--out {path}: is a folder; give a file name in it")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SystemExit(f"--out {path}: cannot create files in {folder} (permission denied); "
                         f"give an --out in a writable folder")
    if formats is None:
        return None
    ext = os.path.splitext(path)[1][1:].lower()
    if ext not in formats:
        what = f"extension .{ext}" if ext else "no extension"
        raise SystemExit(f"--out {path}: {what}; name the file with one of "
                         f"{', '.join('.' + f for f in formats)} (the image format is taken "
                         f"from it)")
    return ext


def write_atomic(path, write):
    """write(tmp) writes the output to tmp, a new file in the folder of the file path names (a
    symbolic link is followed: the file it points to is replaced, the link kept; same file
    system, so the rename is atomic); it then replaces that file, keeping an existing file's
    mode. On any failure tmp is removed and the file is left as it was. Prints the path
    written."""
    target = os.path.realpath(path)
    folder = os.path.dirname(target) or "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(target) + ".",
                               suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes the file 0600: the replaced file's mode, else what a plain open() would
        # give (0666 - umask)
        if os.path.exists(target):
            mode = os.stat(target).st_mode & 0o7777
        else:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        with open(tmp, "rb+") as f:       # on disk before the rename, so a crash leaves
            os.fsync(f.fileno())          # the old file or the new one, never an empty one
        os.replace(tmp, target)
    except BaseException:                 # KeyboardInterrupt too: no stray temp files
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    print(f"wrote {path}")


def save_figure(fig, path, fmt, **kwargs):
    """fig.savefig atomically in the format check_out(path, IMAGE_FORMATS) resolved."""
    write_atomic(path, lambda tmp: fig.savefig(tmp, format=fmt, **kwargs))


def plot_label(name):
    """A run or method name as matplotlib shows it verbatim: '$' would start mathtext (a name
    like 'a $x^$' fails at save time) and a leading '_' hides the entry from the legend."""
    text = name.replace("$", r"\$")
    return "\u200b" + text if text.startswith("_") else text
