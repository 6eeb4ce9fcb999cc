#!/usr/bin/env python3
"""Coverage-guided fuzzing of gostgev's parsers with atheris (libFuzzer for Python).

    python3 scripts/fuzz.py --list
    python3 scripts/fuzz.py TARGET [CORPUS_DIR...] [libFuzzer flags]
    python3 scripts/fuzz.py TARGET CRASH_FILE          # replay one input

Example, one minute on the relay request parser, new inputs kept out of the
committed seeds (libFuzzer writes what it finds into the first directory)::

    mkdir -p /tmp/fuzz-relay
    python3 scripts/fuzz.py relay-request /tmp/fuzz-relay tests/data/fuzz/relay-request -max_total_time=60

The targets and what counts as a finding live in scripts/fuzz_targets.py,
next to this script; the test suite replays the seed corpus through them.
The seeds in tests/data/fuzz/ are built from the test suite's vectors by
``python3 -m tests.fuzz_seeds``.  atheris is not a dependency of gostgev:
``pip install atheris``.
"""

import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The working tree, not an installed copy, is what gets fuzzed.  The targets
# (fuzz_targets.py) come from this script's own directory.
sys.path.insert(0, str(ROOT))

# A single input should take milliseconds; one that takes this long is a hang.
DEFAULT_FLAGS = ("-timeout=10", "-rss_limit_mb=2048")


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) >= 2 else 2
    if argv[1] == "--list":
        from fuzz_targets import TARGETS
        for target in TARGETS.values():
            print("%-18s %s" % (target.name, target.about))
        return 0
    return fuzz(argv[1], argv[2:])


def fuzz(name, flags):
    try:
        import atheris
    except ImportError:
        print("fuzz.py needs atheris, which gostgev does not depend on: python3 -m pip install atheris",
              file=sys.stderr)
        return 2
    with atheris.instrument_imports(include=["gostgev"]):
        from fuzz_targets import TARGETS
    if name not in TARGETS:
        print("unknown target %r; --list shows them" % name, file=sys.stderr)
        return 2
    check = TARGETS[name].check
    given = {flag.split("=", 1)[0] for flag in flags}
    defaults = [flag for flag in DEFAULT_FLAGS if flag.split("=", 1)[0] not in given]
    atheris.Setup([sys.argv[0], *defaults, *flags], check)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
