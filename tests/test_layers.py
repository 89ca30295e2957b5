"""The architecture holds: the import-linter contracts, no import cycles, and one owner for the audit chain."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def test_the_layer_contracts_in_pyproject_hold():
    found = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=ROOT, capture_output=True,
                           text=True)
    assert found.returncode == 0, found.stdout[-4000:]
    assert "0 broken" in found.stdout


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root) & modules)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child) & modules))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_orchestra_modules_import_each_other_in_a_cycle():
    graph = grimp.build_graph("orchestra", "workers", "tasks", exclude_type_checking_imports=True)
    modules = {m for m in graph.modules if m.startswith("orchestra")}
    assert _cycles(graph, modules) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for module in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(module)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.a")
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycles(graph, {"p.a", "p.b", "p.c"}) == [["p.a", "p.b"]]


RUN_AND_STEP_TABLES = ("Run", "StepRun", "runs", "step_runs")


def _status_writes(relative: str, tree: ast.AST) -> list[str]:
    """Where ``tree`` writes a run's or a step's status: ``run.status = ...``, ``update(Run|StepRun)...values(status=)``,
    or SQL that updates ``runs``/``step_runs`` and names ``status``. A human task's status is the wait store's."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                for name in (target.elts if isinstance(target, ast.Tuple) else [target]):
                    if isinstance(name, ast.Attribute) and name.attr == "status" and \
                            isinstance(name.value, ast.Name) and name.value.id in ("run", "row", "parent"):
                        found.append(f"{relative}:{node.lineno}: sets {name.value.id}.status")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "values" and \
                any(k.arg == "status" for k in node.keywords) and \
                any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "update" and n.args and
                    isinstance(n.args[0], ast.Name) and n.args[0].id in RUN_AND_STEP_TABLES for n in ast.walk(node.func)):
            found.append(f"{relative}:{node.lineno}: update(...).values(status=...)")
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            sql = " ".join(node.value.split()).lower()
            if any(f"update {t} " in sql for t in ("runs", "step_runs")) and "status" in sql:
                found.append(f"{relative}:{node.lineno}: SQL that updates a status")
    return found


def test_only_the_state_machine_appends_to_an_audit_chain_or_writes_a_status():
    offenders = []
    for path in sorted((ROOT / "orchestra").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith("orchestra/transitions/") or relative == "orchestra/rawsql.py":
            continue
        tree = ast.parse(path.read_text())
        offenders += _status_writes(relative, tree)
        offenders += [f"{relative}: imports chain_event" for node in ast.walk(tree)
                      if isinstance(node, ast.ImportFrom) and node.module == "orchestra.audit"
                      for alias in node.names if alias.name == "chain_event"]
    assert offenders == []


def test_the_status_write_finder_finds_each_kind_of_write():
    tree = ast.parse("run.status = 'x'\nsession.execute(update(StepRun).where(a).values(status='y'))\n"
                     "tx.execute('UPDATE step_runs SET status = :s WHERE id = :i')\n"
                     "task.status = 'approved'\nsession.execute(update(StepRun).values(lease_expires_at=1))\n")
    assert [f.split(": ", 1)[1] for f in _status_writes("m.py", tree)] == [
        "sets run.status", "update(...).values(status=...)", "SQL that updates a status"]
