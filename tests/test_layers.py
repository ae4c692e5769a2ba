"""The package's shape: imports go down the layers written in README's Layout section (never up, never in a circle),
every module says what it is for, and none is over 300 lines except data tables."""

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PKG = REPO / "projected_grpo"

# README.md "Layout" mirrors this table. A module may import its own layer or lower ones; the longest matching
# prefix places a module (a new module must be placed here before the test passes).
LAYERS = [
    # 0 foundation: no project imports
    ("atomic", 0), ("modes", 0), ("grpo", 0), ("sampler", 0),
    # 1 data, config, records
    ("config", 1), ("integrity", 1), ("tracking", 1), ("evaluate", 1), ("env", 1),
    # 2 the model's pieces and the projection math
    ("adapter", 2), ("checkpoint", 2), ("tokenizer", 2), ("tokens", 2), ("projection", 2),
    # 3 model builder, per-source gradients, snapshots, the teacher pool, the drift diagnostic
    ("model", 3), ("pergrad", 3), ("snapshots", 3), ("teacher_pool", 3), ("drift", 3),
    # 4 the method's inputs: the hack direction, the model organism, the probe monitor's detector
    ("vhack", 4), ("organism", 4), ("probe", 4),
    # 5 route2 (quarantine LoRA + masks), the memory estimate, the monitor interventions, the trusted subspace
    ("route2", 5), ("memory", 5), ("interventions", 5), ("trusted", 5),
    # 6 the train step's parts
    ("setup", 6), ("rollout", 6), ("loss", 6), ("optim_step", 6), ("deploy_eval", 6), ("trainer_state", 6),
    ("summary", 6),
    # 7 the loop
    ("loop", 7),
    # 8 entrypoints and analyses: the Hydra entrypoint, the sweep report, hypothesis tests, every CLI
    ("train", 8), ("report", 8), ("hypotheses", 8), ("vhack.__main__", 8), ("organism.__main__", 8),
    ("env.__main__", 8),
]  # fmt: skip
LINE_LIMIT = 300
OVER_LIMIT_OK = {
    "env/problems.py": "data: the embedded problem table",
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(mod: str) -> int | None:
    best = None
    for prefix, layer in LAYERS:
        if (mod == prefix or mod.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, layer)
    return None if best is None else best[1]


def imports(root: Path) -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its file (function-level imports included);
    `from projected_grpo.x import y` counts as importing x.y when y is a module, else x."""
    files = {module_name(f, root): f for f in sorted(root.rglob("*.py"))}
    out: dict[str, set[str]] = {}
    for mod, f in files.items():
        deps = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{a.name}" for a in node.names]
                names = [n if n.removeprefix(root.name + ".") in files else node.module for n in names]
            else:
                continue
            for n in names:
                if n == root.name or not n.startswith(root.name + "."):
                    continue
                target = n.removeprefix(root.name + ".")
                while target not in files and "." in target:  # `import projected_grpo.a.b` of a name in a
                    target = target.rsplit(".", 1)[0]
                if target != mod and target in files:
                    deps.add(target)
        out[mod] = deps
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer_violations(root: Path = PKG) -> list[str]:
    """Every upward import, unplaced module and import circle under root (a package directory)."""
    graph = imports(root)
    bad = [f"{m}: not placed in LAYERS (tests/test_layers.py and README Layout)" for m in graph if m and
           layer_of(m) is None]  # fmt: skip
    for m, deps in sorted(graph.items()):
        for d in sorted(deps):
            lm, ld = layer_of(m), layer_of(d)
            if lm is not None and ld is not None and ld > lm:
                bad.append(f"{m} (layer {lm}) imports {d} (layer {ld}): an upward import")
    bad += [f"import circle: {' <-> '.join(c)}" for c in cycles(graph)]
    return bad


def test_imports_go_down_the_layers_without_circles():
    # kills: an upward import (e.g. vhack importing loop, model importing organism), a circle, an unplaced module
    bad = layer_violations()
    assert not bad, "\n".join(bad)


def test_the_check_sees_an_upward_import_and_a_circle(tmp_path):
    # kills: a checker that never reports anything (function-level imports and `from pkg import mod` included)
    root = tmp_path / "projected_grpo"
    (root / "vhack").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "vhack" / "__init__.py").write_text("")
    (root / "vhack" / "cache.py").write_text("def f():\n    from projected_grpo import loop\n")
    (root / "loop.py").write_text("from projected_grpo.vhack import cache\n")
    (root / "model.py").write_text("import projected_grpo.organism.pretrain\n")
    (root / "organism").mkdir()
    (root / "organism" / "__init__.py").write_text("")
    (root / "organism" / "pretrain.py").write_text("from projected_grpo.modes import Mode\n")
    (root / "modes.py").write_text("")
    (root / "newthing.py").write_text("")
    bad = layer_violations(root)
    assert "vhack.cache (layer 4) imports loop (layer 7): an upward import" in bad
    assert "model (layer 3) imports organism.pretrain (layer 4): an upward import" in bad
    assert "import circle: loop <-> vhack.cache" in bad
    assert any(b.startswith("newthing: not placed") for b in bad)
    assert len(bad) == 4, bad


def test_every_module_says_what_it_is_for_and_stays_short():
    # kills: a new module without a docstring; a module grown past LINE_LIMIT
    problems = []
    for f in sorted(PKG.rglob("*.py")):
        rel, text = str(f.relative_to(PKG)), f.read_text()
        if (f.name != "__init__.py" or text.strip()) and not ast.get_docstring(ast.parse(text)):
            problems.append(f"{rel}: no module docstring (1-2 lines: what the module is for)")
        n = len(text.splitlines())
        if n > LINE_LIMIT and rel not in OVER_LIMIT_OK:
            problems.append(f"{rel}: {n} lines > {LINE_LIMIT}; split it by concept")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("rel", sorted(OVER_LIMIT_OK))
def test_the_over_limit_allow_list_is_not_stale(rel):
    assert (PKG / rel).exists(), f"{rel} is gone: drop it from OVER_LIMIT_OK"


def layout_rows() -> list[tuple[str, str, str]]:
    """(layer cell, path cell, concept) of the README Layout table."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Layout\n") :]
    section = section[: section.find("\n## ", 5)] if "\n## " in section[5:] else section
    return [tuple(c.strip() for c in line.strip("|").split("|"))[:3] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| layer")]  # fmt: skip


def test_readme_layout_matches_the_tree():
    # kills: a module added, moved or removed without its README Layout row; a row naming the wrong layer
    import re

    rows = layout_rows()
    problems = []
    mentioned = set()
    for layer_cell, path_cell, _ in rows:
        paths = re.findall(r"`([^`]+)`", path_cell)
        pkg = None
        for p in paths:
            if p.startswith("projected_grpo/"):
                pkg = p if p.endswith("/") else None
            elif pkg is not None and "/" not in p and "." not in p:  # a package row's submodule: (`jobs`, ...)
                p = f"{pkg}{p}.py"
            full = REPO / p
            if not full.exists():
                problems.append(f"README Layout names {p}, which does not exist")
                continue
            if p.startswith("projected_grpo/"):
                rel = Path(p).relative_to("projected_grpo")
                mod = module_name(PKG / rel, PKG) if p.endswith(".py") else ".".join(rel.parts)
                mentioned.add(mod)
                m = re.match(r"(\d)", layer_cell)
                if m and layer_of(mod) != int(m.group(1)):
                    problems.append(f"README Layout puts {p} in layer {m.group(1)}; LAYERS says {layer_of(mod)}")
    for f in sorted(PKG.rglob("*.py")):
        mod = module_name(f, PKG)
        if mod and not any(mod == m or mod.startswith(m + ".") for m in mentioned):
            problems.append(f"{mod}: not in README Layout")
        parts = mod.split(".")
        pkg_row = [r[1] for r in rows if f"`projected_grpo/{parts[0]}/` (" in r[1]]  # a row that lists submodules
        if len(parts) == 2 and parts[1] != "__main__" and pkg_row and f"`{parts[1]}`" not in pkg_row[0]:
            problems.append(f"{mod}: its package row in README Layout does not list `{parts[1]}`")
    assert not problems, "\n".join(problems)
