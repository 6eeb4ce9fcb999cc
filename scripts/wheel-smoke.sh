#!/bin/sh
# Test gostgev the way a user installs it: build a wheel from this checkout,
# install it (not editable) into a fresh venv outside the source tree, import
# every module of the source tree from it, then run scripts/smoke.sh with that
# venv's gostgev.  A module, package or dependency the wheel leaves out fails
# here even when the editable install and the test suite do not notice.
#
# Needs python3 with venv (Debian: apt-get install python3-venv), curl, and
# an index for the dependencies.  PYTHON names another interpreter.  The venv
# and the build live in one mktemp -d directory, removed on exit.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}

say() { echo "wheel-smoke: $*"; }
fail() { echo "wheel-smoke: FAIL: $*" >&2; exit 1; }

# Nothing from the environment may put the source tree on sys.path.
if [ -n "${PYTHONPATH:-}" ] || [ -n "${PYTHONHOME:-}" ]; then
    say "ignoring PYTHONPATH/PYTHONHOME from the environment"
fi
unset PYTHONPATH PYTHONHOME

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
tmp=$(cd "$tmp" && pwd -P)
case $tmp/ in
    "$root"/* | "$(cd "$root" && pwd -P)"/*) fail "the temp directory $tmp is inside the source tree (TMPDIR)" ;;
esac

# Build from a copy of the files a clone would have (tracked and not
# ignored): setuptools builds in the source directory, and a stale build/ or
# a file git would not ship must not reach the wheel.
src=$tmp/src
mkdir "$src"
if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$root" ls-files --cached --others --exclude-standard | while IFS= read -r f; do
        [ -f "$root/$f" ] || continue   # deleted in the working tree
        mkdir -p "$src/$(dirname "$f")"
        cp -p "$root/$f" "$src/$f"
    done
else
    (cd "$root" && tar -cf - --exclude=./build --exclude=./dist --exclude=./.venv --exclude=./.tox \
        --exclude='*.egg-info' --exclude=__pycache__ .) | (cd "$src" && tar -xf -)
fi
[ -f "$src/setup.py" ] || fail "no setup.py copied from $root"

venv=$tmp/venv
say "creating a venv in $venv with $python"
"$python" -m venv "$venv" || fail "$python -m venv failed (Debian/Ubuntu: apt-get install python3-venv)"
vpython=$venv/bin/python

say "building the wheel"
"$vpython" -m pip wheel -q --no-deps -w "$tmp/dist" "$src" || fail "pip wheel failed"
set -- "$tmp"/dist/gostgev-*.whl
[ $# -eq 1 ] && [ -f "$1" ] || fail "expected one gostgev wheel in $tmp/dist, found: $*"
wheel=$1
say "installing $(basename "$wheel")"
"$vpython" -m pip install -q "$wheel" || fail "pip install of the wheel failed"

# Every module of the source tree, imported from outside the tree with the
# venv's python in isolated mode (no cwd, no script dir, no PYTHON*, no user
# site on sys.path); each must come from the venv's site-packages.
# __main__ modules run the program when imported: they are only looked up.
cd "$tmp"
"$vpython" -I - "$root" "$venv" <<'EOF' || fail "the installed wheel lacks modules of the source tree (see above)"
import importlib
import importlib.util
import os
import sys
import traceback

root, venv = sys.argv[1], os.path.realpath(sys.argv[2])
names = []
for top, dirs, files in os.walk(os.path.join(root, "gostgev")):
    dirs[:] = sorted(d for d in dirs if d != "__pycache__")
    for f in sorted(files):
        if f.endswith(".py"):
            rel = os.path.relpath(os.path.join(top, f), root)[:-3]
            parts = rel.split(os.sep)
            if parts[-1] == "__init__":
                parts.pop()
            names.append((".".join(parts), rel + ".py"))
bad = []
for name, rel in names:
    try:
        if name.rsplit(".", 1)[-1] == "__main__":
            spec = importlib.util.find_spec(name)
            if spec is None:
                raise ModuleNotFoundError("No module named %r" % name)
            origin = spec.origin
        else:
            origin = importlib.import_module(name).__file__
    except Exception as exc:
        bad.append("%s (%s): %s: %s" % (name, rel, type(exc).__name__, exc))
        if not isinstance(exc, ImportError):
            traceback.print_exc()
        continue
    if not origin or not os.path.realpath(origin).startswith(venv + os.sep):
        bad.append("%s (%s): imported from %s, not from the venv" % (name, rel, origin))
if bad:
    print("wheel-smoke: %d of %d modules do not import from the installed wheel:" % (len(bad), len(names)),
          file=sys.stderr)
    for line in bad:
        print("  " + line, file=sys.stderr)
    print("wheel-smoke: a package directory without __init__.py, a module setup.py leaves out, "
          "or a missing install_requires?", file=sys.stderr)
    sys.exit(1)
print("wheel-smoke: ok   all %d modules of the source tree import from %s" % (len(names), venv))
EOF

PATH=$venv/bin:$PATH
export PATH
found=$(command -v gostgev) || fail "no gostgev command in $venv/bin"
[ "$found" = "$venv/bin/gostgev" ] || fail "gostgev on PATH is $found, not $venv/bin/gostgev"
say "ok   $(gostgev -V) at $found"
say "ok   package at $("$vpython" -I -c 'import gostgev, os; print(os.path.dirname(gostgev.__file__))')"

sh "$root/scripts/smoke.sh"
say "all checks passed"
