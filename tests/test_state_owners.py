"""One owner for every state (docs/architecture.md, "Who owns each state"): an experiment's, a
training run's, an evaluation's and a task's status change only in their storage module, where each
transition is checked and records its event. This scans the source, in the spirit of
tests/test_layering.py: outside the owners, nothing assigns ``.status`` on those rows, builds them
with a bare status string, or updates their status with Core statements."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

from storage.evaluations import EvaluationStatus
from storage.experiments import ExperimentStatus
from storage.models import Evaluation, Experiment, Task, TrainingRun
from storage.result_channel import CELERY_STATES, FINAL_STATES
from storage.runs import RunStatus
from storage.tasks import TERMINAL, TaskStatus

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("api", "actors", "analytics", "storage")
#: class -> the one module that changes its status.
OWNERS = {
    "Experiment": "storage/experiments.py",
    "TrainingRun": "storage/runs.py",
    "Evaluation": "storage/evaluations.py",
    "Task": "storage/tasks.py",
}
#: Names the code base gives those rows when nothing else says what they are.
CONVENTIONAL_NAMES = {
    "experiment": "Experiment", "exp": "Experiment",
    "run": "TrainingRun", "training_run": "TrainingRun",
    "evaluation": "Evaluation",
    "task": "Task",
}


def _classes_in(node: ast.AST) -> set[str]:
    """The owned classes an expression is built from: ``Cls(...)``, ``session.get(Cls, ...)``,
    ``select(Cls)`` anywhere inside it (``session.scalars(select(Cls)...).one()``, a list of them)."""
    found = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            if isinstance(sub.func, ast.Name) and sub.func.id in OWNERS:
                found.add(sub.func.id)
            found.update(a.id for a in sub.args if isinstance(a, ast.Name) and a.id in OWNERS)
    return found


def _annotated(annotation: ast.AST | None) -> set[str]:
    if annotation is None:
        return set()
    return {n.id for n in ast.walk(annotation) if isinstance(n, ast.Name) and n.id in OWNERS}


def _bound_names(tree: ast.AST) -> dict[str, set[str]]:
    """For every name in the module, the owned classes it is bound to somewhere (per module, not per
    scope: a name that holds an Experiment in one function is suspicious in all of them)."""
    names: dict[str, set[str]] = {}

    def bind(target: ast.AST, classes: set[str]) -> None:
        for n in ast.walk(target):
            if isinstance(n, ast.Name) and classes:
                names.setdefault(n.id, set()).update(classes)

    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                bind(target, _classes_in(node.value))
        elif isinstance(node, ast.AnnAssign):
            bind(node.target, _annotated(node.annotation) | (_classes_in(node.value) if node.value else set()))
        elif isinstance(node, ast.For | ast.comprehension):
            bind(node.target, _classes_in(node.iter))
        elif isinstance(node, ast.arg):
            bind(ast.Name(id=node.arg), _annotated(node.annotation))
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            bind(node.optional_vars, _classes_in(node.context_expr))
    return names


def _targets(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.Assign):
        out = []
        for target in node.targets:
            out += target.elts if isinstance(target, ast.Tuple | ast.List) else [target]
        return out
    if isinstance(node, ast.AugAssign | ast.AnnAssign):
        return [node.target]
    return []


def violations_in(source: str, rel: str) -> list[str]:
    tree = ast.parse(source)
    names = _bound_names(tree)
    found = []
    for node in ast.walk(tree):
        for target in _targets(node):
            if not (isinstance(target, ast.Attribute) and target.attr == "status"):
                continue
            owner_of = set()
            if isinstance(target.value, ast.Name):
                name = target.value.id
                owner_of = names.get(name) or ({CONVENTIONAL_NAMES[name]} if name in CONVENTIONAL_NAMES else set())
            owner_of |= _classes_in(target.value)
            found += [f"{rel}:{node.lineno} assigns {cls}.status" for cls in sorted(owner_of) if OWNERS[cls] != rel]
        if not isinstance(node, ast.Call):
            continue
        # Cls(..., status="literal")
        if isinstance(node.func, ast.Name) and node.func.id in OWNERS and OWNERS[node.func.id] != rel:
            for kw in node.keywords:
                if kw.arg == "status" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
                    found.append(f"{rel}:{node.lineno} builds {node.func.id} with status={kw.value.value!r}")
        # update(Cls)....values(status=...)
        if isinstance(node.func, ast.Attribute) and node.func.attr == "values":
            updated = {c for sub in ast.walk(node.func.value) if isinstance(sub, ast.Call)
                       and isinstance(sub.func, ast.Name) and sub.func.id == "update"
                       for c in _classes_in(sub)}
            if any(kw.arg == "status" for kw in node.keywords):
                found += [f"{rel}:{node.lineno} updates {cls}.status" for cls in sorted(updated) if OWNERS[cls] != rel]
    return found


def test_only_the_owners_change_experiment_run_evaluation_and_task_states():
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if "/migrations/" in rel:
                continue
            found += violations_in(path.read_text(), rel)
    assert found == []


def test_the_scan_finds_what_it_forbids():
    """The scan is only worth something if it would catch the patterns it replaced."""
    source = textwrap.dedent('''
        def f(session, exp_id, row: Evaluation):
            experiment = session.get(Experiment, exp_id)
            experiment.status = "training"
            for r in session.scalars(select(TrainingRun)):
                r.status, r.error = "failed", {}
            row.status = "completed"
            run = other()
            run.status = "cancelled"
            session.add(TrainingRun(seed=0, status="queued"))
            session.execute(update(Evaluation).where(Evaluation.id == 1).values(status="failed"))
            environment = session.get(Environment, 1)
            environment.status = "verified"
            session.add(Experiment(name="x", status=ExperimentStatus.CREATED))
    ''')
    found = sorted(f.split(" ", 1)[1] for f in violations_in(source, "actors/example.py"))
    assert found == sorted([
        "assigns Experiment.status", "assigns TrainingRun.status", "assigns Evaluation.status",
        "assigns TrainingRun.status", "builds TrainingRun with status='queued'", "updates Evaluation.status",
    ])
    # In its owner, a run's status may change; nothing else's.
    assert sorted(f.split(" ", 1)[1] for f in violations_in(source, "storage/runs.py")) == sorted([
        "assigns Experiment.status", "assigns Evaluation.status", "updates Evaluation.status"])


def test_the_enums_are_the_vocabulary_of_the_columns_and_of_the_celery_channel():
    for model, enum in ((Experiment, ExperimentStatus), (TrainingRun, RunStatus), (Evaluation, EvaluationStatus),
                        (Task, TaskStatus)):
        assert enum(model.__table__.c.status.default.arg) in enum, model  # the column default is a member
        assert max(len(s.value) for s in enum) <= model.__table__.c.status.type.length
    assert set(CELERY_STATES) == set(TaskStatus)
    assert FINAL_STATES == {"SUCCESS", "FAILURE", "REVOKED"} and TERMINAL == {"succeeded", "failed", "cancelled"}
