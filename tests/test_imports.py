"""The repository's modules import each other as a DAG (DESIGN.md, Layout), read from the source with `ast`.

Every import counts, also one inside a function: hiding an import there does not remove the dependency.
"""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = sorted(f[:-3] for f in os.listdir(ROOT) if f.endswith(".py"))
# packages a function may import where it needs them: heavy, and optional for most commands (huggingface_hub
# and safetensors come with transformers, for hf: entropy models; pydoc_data,
# 0.8 MB of the Python manual, is read only for the builtin corpus)
OPTIONAL = {"matplotlib", "tokenizers", "datasets", "transformers", "huggingface_hub", "safetensors",
            "pydoc_data"}


def imports_of(source: str) -> list[tuple[str, tuple[str, ...], bool]]:
    """(top-level module, imported names, at module level?) for every import statement of `source`."""
    out = []

    def visit(node, top: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                out.extend((a.name.split(".")[0], (), top) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                out.append((child.module.split(".")[0], tuple(a.name for a in child.names), top))
            # a module-level `if`/`try` keeps its imports at the top; a def or class body does not
            visit(child, top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))

    visit(ast.parse(source), True)
    return out


def repo_graph(root: str = ROOT) -> dict[str, set[str]]:
    """module -> the repository modules it imports (anywhere in the file)."""
    names = {f[:-3] for f in os.listdir(root) if f.endswith(".py")}
    graph = {}
    for m in names:
        with open(os.path.join(root, m + ".py"), encoding="utf-8") as f:
            graph[m] = {mod for mod, _, _ in imports_of(f.read()) if mod in names and mod != m}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None for a DAG (depth-first search, three colours)."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles_and_passes_dags():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None  # a diamond is no cycle
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": set(), "a": {"a"}}) == ["a", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]


def test_imports_inside_functions_count(tmp_path):
    (tmp_path / "one.py").write_text("import two\n")
    (tmp_path / "two.py").write_text("def f():\n    from one import g\n    return g\n")
    assert find_cycle(repo_graph(str(tmp_path))) == ["one", "two", "one"]
    found = imports_of("import os\nif True:\n    import numpy\ndef f():\n    from torch import nn\n")
    assert found == [("os", (), True), ("numpy", (), True), ("torch", ("nn",), False)]


def test_the_repository_imports_form_a_dag():
    graph = repo_graph()
    assert {"common", "training", "train_blt", "save_entropy_model"} <= set(graph)
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


@pytest.mark.parametrize("module, allowed", [
    ("common", set()),  # the shared layers and helpers depend on nothing of ours
    ("save_entropy_model", {"common"}),  # model kinds are found by name (MODEL_KINDS), not imported
    ("blt_model", {"common"}),  # a model file: no patcher, no training script
    ("training", {"common", "save_entropy_model"}),
])
def test_foundation_modules_import_only_what_they_may(module, allowed):
    assert repo_graph()[module] <= allowed, f"{module} imports {repo_graph()[module] - allowed}"


def test_imports_sit_at_the_top_and_private_names_stay_home():
    hidden, private = [], []
    for m in MODULES:
        with open(os.path.join(ROOT, m + ".py"), encoding="utf-8") as f:
            for mod, names, top in imports_of(f.read()):
                if not top and mod not in OPTIONAL:
                    hidden.append(f"{m}: {mod}")
                if mod in MODULES:
                    private += [f"{m}: {mod}.{n}" for n in names if n.startswith("_")]
    assert not hidden, f"imports inside functions (only {sorted(OPTIONAL)} may be): {hidden}"
    assert not private, f"private names imported from another module: {private}"
