"""tests/cuda_emu/cut_kernels.py, the tool every emulated-kernel test cuts its kernels with, on
a small hand-written source (its expected output written out here): sections between markers
(exclusive and through the end marker, from/to the file's ends), joined in order; launches
rewritten to emu_launch (template instances, launches over several lines); --replace with exact
and at-least counts; and every way a kernel source can change shape fails with exit status 1
and a message naming the file, the marker or count, and the test to update, writing nothing."""
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TOOL = os.path.join(HERE, 'cut_kernels.py')

SOURCE = '''#include "x.h"
/* ---- kernels ---- */
template <typename T, int W> static __global__ void scale_kernel(T *y, float a) { y[0] *= a; }
void scale(float *y, float a)
{
    scale_kernel<float, 4><<<grid_for(1), kThreads, 0, cuda_stream()>>>(y, a);
}
void twice(float *y)
{
    scale_kernel<float, 4><<<dim3(2, 3),
                             64, 0, cuda_stream()>>>(
        y, 2.0f);
}
/* ---- end ---- */
int untouched;
'''

failures = 0


def check(ok, what):
    global failures
    if not ok:
        failures += 1
        print('FAIL: ' + what)


def run(root, out, launches, *steps):
    """As tests/cuda_emu/emu_common.sh's emu_cut calls the tool."""
    return subprocess.run([sys.executable, TOOL, out, launches, '--for',
                           'tests/cuda_emu/test_example.sh', '--root', root] + list(steps),
                          capture_output=True, text=True)


def read(path):
    if not os.path.exists(path):
        return ''
    with open(path) as f:
        return f.read()


def remove(path):
    if os.path.exists(path):
        os.remove(path)


def expect_failure(root, out, words, *args):
    r = run(root, out, *args)
    message = r.stderr.strip()
    check(r.returncode == 1, '%s: exit status %d, expected 1' % (args, r.returncode))
    for w in words + ['update tests/cuda_emu/test_example.sh']:
        check(w in message, '%s: message %r lacks %r' % (args, message, w))
    check(not os.path.exists(out) and not os.path.exists(out + '.tmp'),
          '%s: an output was written' % (args,))


def main():
    with tempfile.TemporaryDirectory() as root:
        os.mkdir(os.path.join(root, 'cuda'))
        with open(os.path.join(root, 'cuda', 'k.cu'), 'w') as f:
            f.write(SOURCE)
        out = os.path.join(root, 'out.inc')

        # Two sections (the second through its end marker, holding the one launch cut), a
        # replacement.
        r = run(root, out, '1', '--cut', 'cuda/k.cu', '/* ---- kernels', 'void scale(',
                '--cut-through', 'cuda/k.cu', 'void twice', '\n}\n',
                '--replace', 'y[0] *= a;', 'y[0] = y[0] * a;', '1')
        check(r.returncode == 0, 'two sections: exit %d (%s)' % (r.returncode, r.stderr))
        want = ('/* ---- kernels ---- */\n'
                'template <typename T, int W> static __global__ void scale_kernel(T *y, float a)'
                ' { y[0] = y[0] * a; }\n'
                '\n'
                'void twice(float *y)\n'
                '{\n'
                '    emu_launch(scale_kernel<float, 4>, dim3(2, 3),\n'
                '                             64, 0, cuda_stream(), \n'
                '        y, 2.0f);\n'
                '}\n')
        got = read(out)
        check(got == want, 'two sections: got\n%s\nexpected\n%s' % (got, want))
        remove(out)

        # The whole file ('' ''): two launches, at least 1 and exactly 2 both pass.
        for count in ('2', '1+', '2+'):
            r = run(root, out, count, '--cut', 'cuda/k.cu', '', '')
            check(r.returncode == 0, 'whole file, %s launches: exit %d' % (count, r.returncode))
        text = read(out)
        check(text.count('emu_launch(scale_kernel<float, 4>, ') == 2 and '<<<' not in text
              and text.startswith('#include "x.h"') and text.endswith('int untouched;\n'),
              'whole file: launches not rewritten or ends cut:\n' + text)
        check('emu_launch(scale_kernel<float, 4>, grid_for(1), kThreads, 0, cuda_stream(), '
              'y, a);' in text, 'one-line launch rewritten wrongly:\n' + text)
        remove(out)

        # Every way the source can change shape fails, naming what changed.
        expect_failure(root, out, ["cuda/k.cu changed shape", "start marker 'void gone('"],
                       '1', '--cut', 'cuda/k.cu', 'void gone(', '}')
        expect_failure(root, out, ["end marker '/* ---- other' not found"],
                       '1', '--cut', 'cuda/k.cu', 'void scale(', '/* ---- other')
        expect_failure(root, out, ['expected 3 kernel launch(es)', 'found 2'],
                       '3', '--cut', 'cuda/k.cu', '', '')
        expect_failure(root, out, ['expected at least 3 kernel launch(es)', 'found 2'],
                       '3+', '--cut', 'cuda/k.cu', '', '')
        expect_failure(root, out, ["expected 2 occurrence(s) of 'y[0] *= a;'", 'found 1'],
                       '2', '--cut', 'cuda/k.cu', '', '', '--replace', 'y[0] *= a;', 'z', '2')
        expect_failure(root, out, ['cannot read cuda/none.cu'],
                       '1', '--cut', 'cuda/none.cu', '', '')
        expect_failure(root, out, ["bad argument '--cut'"], '1', '--cut', 'cuda/k.cu', 'x')
        expect_failure(root, out, ["bad launch count 'two'"], 'two', '--cut', 'cuda/k.cu', '', '')
    print('%s (%d failures)' % ('FAILED' if failures else 'cut_kernels.py: all ok', failures))
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
