"""The modules' imports point one way: no circle among sftlab's modules, imports inside functions included
(issue 29). A parent package running before its module is Python's doing, not an import of the module's."""

import ast
import re
from pathlib import Path

import sftlab

ROOT = Path(sftlab.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = ["sftlab", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            edges[name] |= {t for t in targets if t in modules and t != name}
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
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
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_among_sftlab_modules():
    modules = _modules()
    assert "sftlab.training.run" in modules and len(modules) > 40
    edges = _edges(modules)
    assert "sftlab.training.run" in edges["sftlab.training.stages"]  # (imports are found, function-level ones too)
    assert _cycles(edges) == []


# ---- layers ----------------------------------------------------------------------------------------------------

def _layers() -> dict[str, int]:
    """docs/layout.md's "Layers": each top-level module or package of sftlab and its layer (1 = lowest)."""
    text = (ROOT.parent / "docs" / "layout.md").read_text(encoding="utf-8").split("\n## Layers\n", 1)[1]
    out = {"sftlab": 1}
    for line in text.splitlines():
        m = re.match(r"(\d+)\. (.*)", line)
        if m:
            for name in re.findall(r"`(\w+)`", m.group(2)):
                out[f"sftlab.{name}"] = int(m.group(1))
    return out


def _unit(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _violations(edges: dict[str, set[str]], layers: dict[str, int]) -> list[str]:
    return sorted(f"{a} (layer {layers[_unit(a)]}) imports {b} (layer {layers[_unit(b)]})"
                  for a, targets in edges.items() for b in targets if layers[_unit(b)] > layers[_unit(a)])


def test_the_layer_checker_finds_an_upward_import():
    layers = {"sftlab.low": 1, "sftlab.high": 2}
    assert _violations({"sftlab.low.x": {"sftlab.high.y"}, "sftlab.high.y": {"sftlab.low"}}, layers) == [
        "sftlab.low.x (layer 1) imports sftlab.high.y (layer 2)"]


def test_modules_never_import_a_higher_layer():
    modules, layers = _modules(), _layers()
    assert layers["sftlab.config"] < layers["sftlab.data"] < layers["sftlab.training"] < layers["sftlab.cli"]
    assert [u for u in sorted({_unit(m) for m in modules}) if u not in layers] == []  # every module has its layer
    assert _violations(_edges(modules), layers) == []


# ---- the process environment -----------------------------------------------------------------------------------

# Where sftlab sets environment variables: the command line's entry point, and forked workers' initializers.
ENVIRONMENT_SETTERS = {("sftlab.cli", "*"), ("sftlab.data.encode", "_single_threaded_tokenizer")}


def _environment_writes(modules: dict[str, Path]) -> list[tuple[str, str, int]]:
    """(module, enclosing function, line) of every os.environ change (item assignment or deletion, setdefault, pop,
    update, clear) and os.putenv / os.unsetenv."""
    def environ(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "environ"

    out = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        functions = {}
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    functions.setdefault(id(node), fn.name)
        for node in ast.walk(tree):
            hit = (isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete))
                   and any(isinstance(t, ast.Subscript) and environ(t.value)
                           for t in (node.targets if hasattr(node, "targets") else [node.target]))) or (
                isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and (
                    (environ(node.func.value) and node.func.attr in ("setdefault", "pop", "update", "clear", "popitem"))
                    or node.func.attr in ("putenv", "unsetenv")))
            if hit:
                out.append((name, functions.get(id(node), "<module>"), node.lineno))
    return sorted(out)


def test_the_environment_checker_finds_each_kind_of_change(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import os\nos.environ['A'] = '1'\ndef f():\n    os.environ.setdefault('B', '1')\n"
                 "    del os.environ['C']\n    os.putenv('D', '1')\n    x = os.environ.get('E')\n")
    assert _environment_writes({"sftlab.m": f}) == [("sftlab.m", "<module>", 2), ("sftlab.m", "f", 4),
                                                      ("sftlab.m", "f", 5), ("sftlab.m", "f", 6)]


def test_library_code_never_changes_the_process_environment():
    writes = _environment_writes(_modules())
    assert any(module == "sftlab.cli" for module, _, _ in writes)  # (the checker sees the entry point's)
    assert [w for w in writes if (w[0], "*") not in ENVIRONMENT_SETTERS and w[:2] not in ENVIRONMENT_SETTERS] == []


# ---- tests mirror modules --------------------------------------------------------------------------------------

def test_every_module_has_its_test_file_or_its_line_in_the_layout():
    """tests/test_<module>.py (or test_<package>_<module>.py), or docs/layout.md's "Tests" naming the tests."""
    text = (ROOT.parent / "docs" / "layout.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"`([\w/]+)`", text.split("\n## Tests\n", 1)[1].split("\n## ", 1)[0]))
    tests = {p.name for p in (ROOT.parent / "tests").glob("test_*.py")}
    missing = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            continue
        names = {f"test_{parts[-1]}.py", f"test_{'_'.join(parts)}.py"}
        if not names & tests and "/".join(parts) not in listed:
            missing.append("/".join(parts))
    assert missing == []
