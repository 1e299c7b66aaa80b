"""The add-on's modules import one another in one direction: no cycle, not even one hidden in a
function-local import (those defer the cycle to run time, where it breaks on the first reload)."""
import ast
import os
import unittest

import _path

def package_imports(package_dir):
    """{module: {modules of the package it imports anywhere in its body}}, names relative to the
    package ("core.session"; "" is the package's __init__)."""
    graph = {}
    for root, _dirs, files in os.walk(package_dir):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(root, name)
            parts = os.path.relpath(path, package_dir)[:-3].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            module = ".".join(parts)
            here = parts if name == "__init__.py" else parts[:-1]
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            deps = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.level > 0:
                    base = here[:len(here) - (node.level - 1)] if node.level > 1 else list(here)
                    if node.module:
                        deps.add(".".join(base + node.module.split(".")))
                    else:
                        deps.update(".".join(base + [a.name]) for a in node.names)
            graph[module] = deps
    for module, deps in graph.items():
        # "from .core import messages" names the module core.messages, not only the package core.
        graph[module] = {d for d in deps if d in graph and d != module}
    return graph


def find_cycle(graph):
    """One import cycle as [a, b, ..., a], or None."""
    state = {}

    def visit(module, trail):
        state[module] = "open"
        for dep in sorted(graph[module]):
            if state.get(dep) == "open":
                return trail[trail.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep, trail + [dep])
                if found:
                    return found
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module, [module])
            if found:
                return found
    return None


class ImportCycleTest(unittest.TestCase):
    def test_finds_a_cycle_hidden_in_a_function(self):
        self.assertEqual(find_cycle({"a": {"b"}, "b": {"a"}}), ["a", "b", "a"])
        self.assertIsNone(find_cycle({"a": {"b"}, "b": set()}))

    def test_the_add_on_has_no_import_cycle(self):
        graph = package_imports(_path.PACKAGE_DIR)
        self.assertIn("preferences", graph[""])  # the package's __init__ is read too
        self.assertIsNone(find_cycle(graph))


if __name__ == "__main__":
    unittest.main()
