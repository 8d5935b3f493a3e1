"""Reading kernels out of PTX, for the PTX checks (tests/gpu/test_*_ptx.sh run their Python
through ptx_check in ptx_common.sh, which puts this folder on the module path). Each check
keeps its own assertions; this module only finds a kernel and the instructions in it.
Named without the test_ prefix: tests/run.sh runs tests/*/test_*.py, and this is no test."""
import re
import sys


def read_ptx():
    """The PTX file named by the script's first argument."""
    with open(sys.argv[1]) as f:
        return f.read()


def kernel_body(ptx, name):
    """The first .entry whose mangled name contains a match of the regex name, from .entry to
    the closing brace at the start of a line; None when there is none."""
    m = re.search(r"\.entry\s+\S*" + name + r"\S*\(.*?\n\}", ptx, re.S)
    return m.group(0) if m else None


def require_kernel(ptx, name, what):
    """kernel_body, or "FAIL: no <what> in the PTX" and exit 1."""
    body = kernel_body(ptx, name)
    if body is None:
        print("FAIL: no %s in the PTX" % what)
        sys.exit(1)
    return body


def fused_multiply_adds(body):
    """Every f32 fma/mad (one rounding where the CPU has two)."""
    return re.findall(r"\b(?:fma|mad)\S*\.f32\b", body)


def approximate_ops(body):
    """Divisions, reciprocals, exponentials and logarithms that are not correctly rounded."""
    return re.findall(r"\b(?:div\.(?:approx|full)\S*|rcp\.approx\S*|ex2\S*|lg2\S*)", body)


def count(body, instruction):
    """How often the instruction (e.g. mul.rn.f32, exactly: not mul.rn.f32x2) occurs."""
    return len(re.findall(r"\b" + re.escape(instruction) + r"\b", body))


def opcodes(body):
    """The opcode of every instruction line (after an optional @%p / @!%p predicate)."""
    return re.findall(r"^\s*(?:@!?%p\d+\s+)?([a-z]+(?:\.[a-z0-9]+)*)\s", body, re.M)
