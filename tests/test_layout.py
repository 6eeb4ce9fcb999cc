"""The package's layering, checked from its source: what may import what, no cycles, small modules.

codec/ is sans-IO (no gevent); netio/ is gevent I/O on top of codec/ only;
config/ parses and checks without importing any implementation (the
registries come in through gostgev.components); no module imports,
through its top-level imports, something that imports it back; and no
module grows past 400 lines.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "gostgev"
MAX_LINES = 400
#: pure modules every layer may use
SHARED = {"gostgev.addr", "gostgev.errors", "gostgev.levels", "gostgev.settings"}


def _modules():
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(path, top_level_only):
    """The modules ``path`` imports (``from a.b import c`` is a.b.c when that is a module)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = "%s.%s" % (node.module, alias.name)
                found.add(child if child in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _within(name, package):
    return name == package or name.startswith(package + ".")


@pytest.mark.parametrize("name", [n for n in MODULES if _within(n, "gostgev.codec")])
def test_codec_is_sans_io(name):
    imports = _imports(MODULES[name], top_level_only=False)
    assert not [i for i in imports if _within(i, "gevent") or _within(i, "socket")], imports
    assert all(_within(i, "gostgev.codec") or i in SHARED for i in imports if _within(i, "gostgev")), imports


@pytest.mark.parametrize("name", [n for n in MODULES if _within(n, "gostgev.netio")])
def test_netio_builds_on_codec_only(name):
    imports = {i for i in _imports(MODULES[name], top_level_only=False) if _within(i, "gostgev")}
    assert all(_within(i, "gostgev.codec") or _within(i, "gostgev.netio") or i in SHARED for i in imports), imports


@pytest.mark.parametrize("name", [n for n in MODULES if _within(n, "gostgev.config")])
def test_config_imports_no_implementation(name):
    allowed = ("gostgev.config", "gostgev.codec", "gostgev.auth", "gostgev.ingress", "gostgev.limits",
               "gostgev.hostmatch", "gostgev.textfile")
    imports = {i for i in _imports(MODULES[name], top_level_only=False) if _within(i, "gostgev")}
    assert all(any(_within(i, a) for a in allowed) or i in SHARED for i in imports), imports


def test_no_import_cycle():
    graph = {name: {i for i in _imports(path, top_level_only=True) if i in MODULES and i != name}
             for name, path in MODULES.items()}
    done, active = set(), []

    def visit(name):
        if name in active:
            raise AssertionError("import cycle: " + " -> ".join(active[active.index(name):] + [name]))
        if name in done:
            return
        active.append(name)
        for dep in sorted(graph[name]):
            visit(dep)
        active.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_small(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, "%s has %d lines; split it by responsibility" % (name, lines)
