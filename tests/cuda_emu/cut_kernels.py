#!/usr/bin/env python3
"""Cuts CUDA kernel source out of cuda/ for the host emulation (tests/cuda_emu/test_*_emulated.sh).

One tool for every emulated test, so each test states only WHAT it cuts:

    cut_kernels.py OUT LAUNCHES [--for SCRIPT] [--root DIR] STEP...

  OUT        the file written (an .inc or .cpp the test compiles against emu_cuda.h or
             emu_serial.h); written to OUT.tmp and renamed, so nothing half-written is left
  LAUNCHES   the number of kernel<<<...>>> launches the cut text must hold: N exactly, or N+
             for at least N
  --for      the test script named in every error message ("update SCRIPT")
  --root     the repository root the FILE paths are relative to (default: two folders above
             this file)

  STEPs (after --for and --root):
    --cut FILE START END           the text of FILE from the first START up to (not including)
                                   the first END after it; START '' = from the file's start,
                                   END '' = to the file's end
    --cut-through FILE START END   the same, END included (e.g. a function's closing "\\n}\\n")
    --replace OLD NEW COUNT        in the joined cut text: every OLD becomes NEW, and OLD must
                                   occur COUNT times (N exactly, or N+ for at least N); applied
                                   in order, after all the cuts

The sections are joined by newlines in the order given, the --replace steps applied, then every
launch
    kernel<<<grid, block, smem, stream>>>(args)  ->  emu_launch(kernel, grid, block, smem, stream, args)
(kernel may be a template instance, e.g. name<T, 4>; the launch may span lines). A marker not
found, a replacement or launch count other than expected, exits non-zero with a message naming
the file, the marker and the script to update: a kernel source that changed shape fails the
test instead of testing something else. Tested by tests/cuda_emu/test_cut_kernels.py.
"""
import os
import re
import sys

LAUNCH = re.compile(r'([A-Za-z_]\w*(?:<[^<>()]*>)?)\s*<<<(.*?)>>>\s*\(', flags=re.S)


def fail(script, message):
    sys.exit('cut_kernels.py: %s: update %s' % (message, script))


def parse_count(text, what, script):
    """'N' -> (N, exact), 'N+' -> (N, at least)."""
    m = re.fullmatch(r'(\d+)(\+?)', text)
    if not m:
        fail(script, 'bad %s count %r (N or N+)' % (what, text))
    return int(m.group(1)), m.group(2) == '+'


def count_ok(found, expected):
    n, at_least = expected
    return found >= n if at_least else found == n


def count_words(expected):
    n, at_least = expected
    return '%s%d' % ('at least ' if at_least else '', n)


def cut(root, path, start, end, through, script):
    try:
        with open(os.path.join(root, path)) as f:
            src = f.read()
    except OSError as e:
        fail(script, 'cannot read %s (%s)' % (path, e.strerror))
    a = src.find(start) if start else 0
    if a < 0:
        fail(script, '%s changed shape: start marker %r not found' % (path, start))
    if not end:
        return src[a:]
    b = src.find(end, a + 1)
    if b < 0:
        fail(script, '%s changed shape: end marker %r not found after start marker %r'
             % (path, end, start))
    return src[a:b + len(end)] if through else src[a:b]


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    out, launches_arg, rest = argv[0], argv[1], argv[2:]
    script = 'the test that called cut_kernels.py'
    root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
    parts, replacements = [], []
    i = 0
    while i < len(rest):
        opt = rest[i]
        if opt in ('--for', '--root') and i + 1 < len(rest):
            if opt == '--for':
                script = rest[i + 1]
            else:
                root = rest[i + 1]
            i += 2
        elif opt in ('--cut', '--cut-through') and i + 3 < len(rest):
            parts.append((rest[i + 1], rest[i + 2], rest[i + 3], opt == '--cut-through'))
            i += 4
        elif opt == '--replace' and i + 3 < len(rest):
            replacements.append((rest[i + 1], rest[i + 2], rest[i + 3]))
            i += 4
        else:
            fail(script, 'bad argument %r (or too few values after it); see the usage at the '
                 'top of tests/cuda_emu/cut_kernels.py' % opt)
    if not parts:
        fail(script, 'nothing to cut (no --cut)')
    expected_launches = parse_count(launches_arg, 'launch', script)
    text = '\n'.join(cut(root, path, start, end, through, script)
                     for path, start, end, through in parts)
    for old, new, count_arg in replacements:
        expected = parse_count(count_arg, 'replacement', script)
        found = text.count(old)
        if not count_ok(found, expected):
            fail(script, 'expected %s occurrence(s) of %r in the cut sections, found %d'
                 % (count_words(expected), old, found))
        text = text.replace(old, new)
    text, found = LAUNCH.subn(lambda m: 'emu_launch(%s, %s, ' % (m.group(1), m.group(2)), text)
    if not count_ok(found, expected_launches):
        fail(script, 'expected %s kernel launch(es) in the cut sections, found %d'
             % (count_words(expected_launches), found))
    with open(out + '.tmp', 'w') as f:
        f.write(text)
    os.replace(out + '.tmp', out)


if __name__ == '__main__':
    main(sys.argv[1:])
