"""The sandbox package's shape: the server (``server.py``, run alone with ``python -I -S``) imports only the stdlib
and its server-side siblings, all before it chroots, and never the trainer's code; every module stays small."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from projected_grpo.env.sandbox import Worker

PACKAGE = Path(__file__).resolve().parents[1] / "projected_grpo" / "env" / "sandbox"
TRAINER_SIDE = {"__init__", "client"}  # what the server must never import


def _imports(name: str) -> list[tuple[ast.stmt, bool]]:
    """Every import statement of module `name` of the package, with whether it is at module level."""
    tree = ast.parse((PACKAGE / f"{name}.py").read_text())
    top = set(map(id, tree.body))
    return [(n, id(n) in top) for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def server_side() -> set[str]:
    """The modules server.py loads: the closure of its relative imports."""
    seen, todo = set(), ["server"]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += [n.module for n, _ in _imports(name) if isinstance(n, ast.ImportFrom) and n.level]
    return seen


def test_server_side_imports_only_stdlib_and_siblings_before_the_chroot():
    """Kills: `import projected_grpo` (or any third-party module) in a server-side module; a server-side module
    importing the client or the package __init__; a sibling imported inside a function (after the chroot, where it
    cannot be found); `from . import x` (which would run the package __init__ in the server)."""
    modules = server_side()
    assert {"values", "compare", "protocol", "confine", "child", "workdir", "supervisor"} <= modules, modules
    assert not modules & TRAINER_SIDE, modules & TRAINER_SIDE
    bad = []
    for name in sorted(modules):
        for node, at_top in _imports(name):
            if isinstance(node, ast.ImportFrom) and node.level:
                if node.level != 1 or not node.module or not (PACKAGE / f"{node.module}.py").is_file():
                    bad.append(f"{name}.py:{node.lineno}: relative import that is not `from .<sibling> import`")
                elif not at_top:
                    bad.append(f"{name}.py:{node.lineno}: sibling {node.module} imported inside a function")
                continue
            roots = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            bad += [f"{name}.py:{node.lineno}: imports {r} (not stdlib)" for r in roots
                    if r.split(".")[0] not in sys.stdlib_module_names]
    assert not bad, "\n".join(bad)


def test_every_sandbox_module_is_short():
    """Issue 15: no module over 300 lines (kills: the old 1428-line sandbox.py)."""
    long = {p.name: n for p in PACKAGE.glob("*.py") if (n := len(p.read_text().splitlines())) > 300}
    assert not long, long


@pytest.fixture(scope="module")
def worker():
    w = Worker(0)
    w.start()
    yield w
    w.stop()


# Runs in a sandboxed child, which inherits the zygote's sys.modules: what the server imported.
MODULES_PROBE = """
import sys
def imported():
    package = sys.modules.get("sandbox")
    return sorted([m for m in sys.modules if m.startswith("projected_grpo") or m.endswith(".client")]
                  + (["sandbox/__init__.py"] if getattr(package, "__file__", None) else [])
                  + [m for m in ("sandbox.supervisor", "sandbox.child") if m not in sys.modules])
"""


def test_the_running_server_holds_nothing_of_the_trainer(worker):
    """The same property at run time, from inside a child: no projected_grpo module, no client and no package
    __init__ in the zygote's memory, and the siblings loaded as `sandbox.*` (kills: the server importing the
    package normally, which runs __init__ and the client; a bootstrap that loads the siblings elsewhere)."""
    res = worker.run({"kind": "oracle", "module": "solution", "setup": "", "code": MODULES_PROBE,
                      "calls": ["imported()"], "cpu_s": 5.0, "wall_s": 10.0})
    assert res["status"] == "exited" and res["phase1_done"] and res["result"] == "V []\n", res
