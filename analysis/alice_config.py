"""alice's `key = value` configuration text (job files, a checkpoint's `config` attribute) as
a dict of strings, read as src/core/config.c reads it: a '#' at the start of a line or after
whitespace starts a comment (so a path like runs/exp#1 is a value, not a comment)."""
import re

_COMMENT = re.compile(r"(?:^|(?<=\s))#", re.ASCII)   # C's isspace: ASCII whitespace only
_SPACE = " \t\r\n\f\v"


def parse_config_text(text):
    """`key = value` lines -> dict of strings; a line without '=' raises ValueError."""
    cfg = {}
    for line in text.split("\n"):
        line = _COMMENT.split(line, 1)[0].strip(_SPACE)
        if not line:
            continue
        if "=" not in line:
            raise ValueError("config line without '=': %r" % line)
        k, v = line.split("=", 1)
        cfg[k.strip(_SPACE)] = v.strip(_SPACE)
    return cfg
