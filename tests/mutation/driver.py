"""Mutation testing of the trust-critical modules with mutmut, one module at a time (scripts/mutation.sh).

Each module gets a scratch directory ``.mutation/<name>`` whose ``pyproject.toml`` holds the project's pytest
settings and a ``[tool.mutmut]`` table: the project's own (pyproject.toml) plus this module as the only file to
mutate and its narrow test selection (tests/mutation/modules.toml). mutmut copies the sources there, so the work
tree is never modified. Afterwards every mutant that no test killed is named by its function and its diff (not by
mutmut's per-function number, nor by line) and looked up in tests/mutation/equivalent.toml (reviewed equivalent
mutants, each with its reason) and tests/mutation/survivors.toml (known survivors: not equivalent, the test that
would kill each is still to be written, and the entry says which); any other survivor fails the run.

Usage: python tests/mutation/driver.py [--jobs N] [--list] [--ci] [module ...]   (no module: all of them)

``--ci`` picks the modules for the test suite (scripts/test.sh): those whose file differs from the merge base with
origin/main, plus one module in rotation (the UTC day number modulo the module count), so that every module is
mutated at least once every len(modules) days while a CI run pays for about one module (docs/testing.md).
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import difflib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SCRATCH = ROOT / ".mutation"
SOURCES = ("exporter", "audit", "common")
# mutmut's result words: a mutant the tests noticed (failed, hung or crashed) is killed.
KILLED = {"killed", "timeout", "segfault", "caught by type check"}
UNKILLED = {"survived", "no tests", "suspicious"}


@dataclass(frozen=True)
class Module:
    name: str
    path: str
    tests: tuple[str, ...]
    functions: tuple[str, ...] = ()

    @property
    def dotted(self) -> str:
        return self.path.removesuffix(".py").replace("/", ".")


@dataclass(frozen=True)
class Survivor:
    module: str
    function: str  # Class.method or function, as in the source
    diff: str  # "-old" / "+new" lines, whitespace-normalised
    mutant: str  # mutmut's name, to look at it with `mutmut show` in the scratch directory
    status: str


@dataclass
class Outcome:
    module: str
    mutants: int = 0
    killed: int = 0
    equivalent: list[Survivor] = field(default_factory=list)  # listed in equivalent.toml, with the reason
    known: list[Survivor] = field(default_factory=list)  # listed in survivors.toml: a test still to write
    survivors: list[Survivor] = field(default_factory=list)  # in neither list: fails the run
    seconds: float = 0.0


def load_modules() -> dict[str, Module]:
    doc = tomllib.loads((HERE / "modules.toml").read_text())
    return {name: Module(name, spec["path"], tuple(spec["tests"]), tuple(spec.get("functions", ())))
            for name, spec in doc["modules"].items()}


def load_listed(name: str, why: str) -> dict[tuple[str, str, str], str]:
    """(module, function, diff) -> the entry's ``why`` text; an entry without one is refused (a reviewed list)."""
    doc = tomllib.loads((HERE / name).read_text())
    out = {}
    for entry in doc.get("mutant", []):
        if not str(entry.get(why, "")).strip():
            raise SystemExit(f"{name}: entry {entry.get('module')}:{entry.get('function')} has no {why}")
        out[(entry["module"], entry["function"], normalise(entry["diff"]))] = entry[why]
    return out


def normalise(diff: str) -> str:
    return "\n".join(" ".join(line.split()) for line in diff.strip().splitlines() if line.strip())


def _toml(value: object) -> str:
    """The few TOML value shapes the scratch pyproject needs (JSON spells them the same way)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def scratch_pyproject(module: Module) -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pytest_opts = project["tool"]["pytest"]["ini_options"]
    mutmut = dict(project["tool"].get("mutmut", {}))
    mutmut.update(source_paths=list(SOURCES), only_mutate=[module.path],
                  pytest_add_cli_args_test_selection=list(module.tests))
    lines = ["[tool.pytest.ini_options]", *(f"{k} = {_toml(v)}" for k, v in pytest_opts.items()), "",
             "[tool.mutmut]", *(f"{k} = {_toml(v)}" for k, v in mutmut.items())]
    return "\n".join(lines) + "\n"


def prepare(module: Module) -> Path:
    """A fresh scratch directory: links to the sources and tests, and the module's pyproject.toml."""
    work = SCRATCH / module.name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for name in (*SOURCES, "tests"):
        (work / name).symlink_to(ROOT / name)
    (work / "pyproject.toml").write_text(scratch_pyproject(module))
    return work


def mutmut(work: Path, *args: str, log: Path | None = None) -> str:
    cmd = [sys.executable, "-m", "mutmut", *args]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    if log is None:
        return subprocess.run(cmd, cwd=work, env=env, check=True, capture_output=True, text=True).stdout
    with log.open("w") as out:
        proc = subprocess.run(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"mutmut run failed for {work.name} (exit {proc.returncode}); log {log}:\n{tail}")
    return ""


def statuses(work: Path) -> dict[str, str]:
    out = {}
    for line in mutmut(work, "results", "--all", "true").splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep:
            out[name] = status
    return out


def function_sources(mutated_file: Path) -> dict[str, str]:
    """Every function definition of mutmut's output file by name (module level and in classes), dedented."""
    text = mutated_file.read_text()
    lines = text.splitlines()  # sliced by line numbers: ast.get_source_segment re-splits the file on every call
    return {node.name: textwrap.dedent("\n".join(lines[node.lineno - 1:node.end_lineno]))
            for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def describe(module: Module, mutant: str, status: str, sources: dict[str, str]) -> Survivor:
    local = mutant.removeprefix(module.dotted + ".")
    stem, _, number = local.rpartition("__mutmut_")
    readable = stem.removeprefix("x").lstrip("_ǁ").replace("ǁ", ".") if stem.startswith("xǁ") \
        else stem.removeprefix("x_")
    # The def line carries mutmut's per-mutant name; drop the suffix so only a changed default shows.
    original = sources.get(f"{stem}__mutmut_orig", "").replace(f"{stem}__mutmut_orig", stem, 1).splitlines()
    mutated = sources.get(f"{stem}__mutmut_{number}", "").replace(f"{stem}__mutmut_{number}", stem, 1).splitlines()
    changed = [line for line in difflib.unified_diff(original, mutated, lineterm="", n=0)
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    return Survivor(module.name, readable, normalise("\n".join(changed)), mutant, status)


def run_module(module: Module, jobs: int, reuse: bool = False) -> Outcome:
    """Mutate ``module`` afresh, or with ``reuse`` only judge the results its scratch directory already holds."""
    started = time.monotonic()
    work = SCRATCH / module.name if reuse else prepare(module)
    globs = [f"{module.dotted}.{pattern}" for pattern in module.functions]
    if not reuse:
        mutmut(work, "run", "--max-children", str(jobs), *globs, log=work / "mutmut.log")
    results = {name: status for name, status in statuses(work).items()
               if name.startswith(module.dotted + ".")
               and (not globs or any(_glob(name, g) for g in globs))}
    outcome = Outcome(module.name, mutants=len(results), seconds=time.monotonic() - started)
    outcome.killed = sum(status in KILLED for status in results.values())
    unknown = {s for s in results.values() if s not in KILLED | UNKILLED}
    if unknown:
        raise SystemExit(f"{module.name}: mutants not run to the end ({', '.join(sorted(unknown))}); see "
                         f"{work / 'mutmut.log'}")
    sources = function_sources(work / "mutants" / module.path)
    equivalent = load_listed("equivalent.toml", "reason")
    known = load_listed("survivors.toml", "missing")
    for name, status in sorted(results.items()):
        if status in UNKILLED:
            survivor = describe(module, name, status, sources)
            key = (survivor.module, survivor.function, survivor.diff)
            bucket = outcome.equivalent if key in equivalent else outcome.known if key in known else outcome.survivors
            bucket.append(survivor)
    return outcome


def _glob(name: str, pattern: str) -> bool:
    from fnmatch import fnmatchcase
    return fnmatchcase(name, pattern)


def ci_modules(modules: dict[str, Module], today: dt.date) -> list[str]:
    """Today's module in rotation and the trust modules changed since the merge base with origin/main (or main)."""
    names = list(modules)
    chosen = [names[today.toordinal() % len(names)]]
    base = ""
    for ref in ("origin/main", "main"):  # a clone has origin/main; a local worktree may only have main
        base = base or subprocess.run(["git", "merge-base", "HEAD", ref], cwd=ROOT, capture_output=True, text=True,
                                      check=False).stdout.strip()
    if base:
        diff = subprocess.run(["git", "diff", "--name-only", base, "--", *(m.path for m in modules.values())],
                              cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
        chosen += [m.name for m in modules.values() if m.path in diff and m.name not in chosen]
    else:
        print("mutation: no merge base with main; only the module in rotation", file=sys.stderr)
    return chosen


def print_table(outcomes: Iterable[Outcome]) -> None:
    rows = [("module", "mutants", "killed", "equivalent", "known survivors", "new survivors", "seconds")]
    rows += [(o.module, str(o.mutants), str(o.killed), str(len(o.equivalent)), str(len(o.known)),
              str(len(o.survivors)), f"{o.seconds:.0f}") for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))


def print_survivors(outcomes: Iterable[Outcome]) -> None:
    for outcome in outcomes:
        for s in outcome.survivors:
            print(f"\nSURVIVED {s.module}: {s.function} ({s.status}; `mutmut show {s.mutant}` in "
                  f".mutation/{s.module})\n{textwrap.indent(s.diff, '    ')}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="module names from tests/mutation/modules.toml (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--list", action="store_true", help="print the module names and paths, and exit")
    parser.add_argument("--ci", action="store_true",
                        help="the changed modules and today's module in rotation (scripts/test.sh)")
    parser.add_argument("--toml", action="store_true",
                        help="print new survivors as TOML entries (to review and complete, not to paste blindly)")
    parser.add_argument("--reuse", action="store_true",
                        help="judge the results of the last run in .mutation/<module> again, without mutating")
    parser.add_argument("--record", metavar="WHY",
                        help="append the new survivors to survivors.toml with WHY as their 'missing' text (a debt "
                             "entry, for a module mutated for the first time; judge each one later)")
    args = parser.parse_args(argv)
    modules = load_modules()
    if args.list:
        for m in modules.values():
            print(f"{m.name} {m.path}")
        return 0
    unknown = [name for name in args.modules if name not in modules]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(modules)}")
    chosen = args.modules or (ci_modules(modules, dt.datetime.now(dt.UTC).date()) if args.ci else list(modules))
    outcomes = []
    for name in chosen:
        print(f"== {'judging' if args.reuse else 'mutating'} {modules[name].path}", file=sys.stderr, flush=True)
        outcomes.append(run_module(modules[name], args.jobs, args.reuse))
    print_table(outcomes)
    print_survivors(outcomes)
    if args.toml:
        for outcome in outcomes:
            for s in outcome.survivors:
                print(f'\n[[mutant]]\nmodule = "{s.module}"\nfunction = "{s.function}"\n'
                      f"diff = '''\n{s.diff}\n'''\nreason = \"\"  # or: missing = \"\" (survivors.toml)")
    if args.record:
        with (HERE / "survivors.toml").open("a") as out:
            for outcome in outcomes:
                for s in outcome.survivors:
                    out.write(f'\n[[mutant]]\nmodule = "{s.module}"\nfunction = "{s.function}"\n'
                              f"diff = '''\n{s.diff}\n'''\nmissing = {json.dumps(args.record)}\n")
        return 0
    return 1 if any(o.survivors for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
