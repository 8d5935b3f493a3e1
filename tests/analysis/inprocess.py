"""Runs an analysis script's main() in the test's own process, as its command line would (one
import of matplotlib/torch for many runs keeps the tests at seconds)."""
import contextlib
import io
import sys


def call(main, argv):
    """(exit code, stdout, stderr) of main() with sys.argv = [script] + argv. An exception other
    than SystemExit is a traceback the user would see: returned as the code
    "traceback: <type>: <message>", which no test takes for a clean exit."""
    out, err = io.StringIO(), io.StringIO()
    saved, sys.argv = sys.argv, [main.__module__ + ".py"] + argv
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main() or 0
        except SystemExit as e:
            rc = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
            if not isinstance(e.code, int) and e.code is not None:
                print(e.code, file=sys.stderr)     # what python prints for sys.exit("...")
        except Exception as e:  # noqa: BLE001 - any other exception is the bug under test
            rc = f"traceback: {type(e).__name__}: {e}"
        finally:
            sys.argv = saved
    return rc, out.getvalue(), err.getvalue()
