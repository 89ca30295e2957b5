"""How fast the ``orchestra`` command answers.

Prints, as medians over fresh interpreters:

- the import time of ``orchestra.cli`` and of ``orchestra.spec`` (``python -X importtime``'s
  cumulative figure for the module), and which heavy libraries ``import orchestra.spec`` pulls in;
- the wall time of ``orchestra --help`` and of ``orchestra runs`` against a fresh SQLite database
  holding a few runs (hyperfine-style: one warm-up, then ``--repeat`` timed runs).

The aim (issue 12) is under 0.5 s for ``--help`` and ``runs`` on the development machine. Two floors are
printed beside them, since a loaded machine slows everything alike: a bare ``python -c pass`` and
``import sqlalchemy.orm``, which ``orchestra runs`` cannot avoid (it reads the database).

Children run with bytecode caching on, as on a user's machine (``PYTHONDONTWRITEBYTECODE`` is dropped;
``__pycache__`` is git-ignored).

    .venv/bin/python bench/cli.py [--repeat 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("sqlalchemy", "httpx", "redis", "celery", "kombu", "jsonschema", "fastapi", "pydantic_settings")


CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def import_seconds(module: str, repeat: int) -> float:
    """Median cumulative import time of ``module`` in a fresh interpreter, from ``-X importtime``."""
    samples = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], cwd=ROOT, env=CHILD_ENV,
                             capture_output=True, text=True, check=True).stderr
        for line in out.splitlines():
            parts = line.split("|")
            if len(parts) == 3 and parts[2].strip() == module:
                samples.append(int(parts[1]) / 1e6)
    return statistics.median(samples)


def heavy_modules(module: str) -> list[str]:
    code = f"import sys, {module}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=CHILD_ENV, capture_output=True, text=True,
                         check=True).stdout
    return out.split()


def wall_seconds(args: list[str], env: dict[str, str], repeat: int) -> tuple[float, float]:
    """(median, max) wall time of a command, after one warm-up run."""
    samples = []
    for n in range(repeat + 1):
        start = time.perf_counter()
        subprocess.run(args, cwd=ROOT, env=env, capture_output=True, check=True)
        if n:
            samples.append(time.perf_counter() - start)
    return statistics.median(samples), max(samples)


def seeded_environment(tmp: Path) -> dict[str, str]:
    """A fresh SQLite database with the config's workflows and three pending runs; no Redis needed."""
    env = {**CHILD_ENV, "ORCHESTRA_DATABASE_URL": f"sqlite:///{tmp / 'cli.db'}", "ORCHESTRA_VAR_DIR": str(tmp / "var"),
           "ORCHESTRA_CONFIG_DIR": str(ROOT / "config"), "ORCHESTRA_REDIS_URL": "redis://127.0.0.1:1/0"}
    seed = ("from orchestra.bootstrap import bootstrap; from orchestra.runs import submit_run; bootstrap(); "
            "[submit_run('example', {'customer': f'c{n}', 'message': f'hello {n}'}, dispatch=False) for n in range(3)]")
    subprocess.run([sys.executable, "-c", seed], cwd=ROOT, env=env, check=True, capture_output=True)
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    orchestra = str(Path(sys.executable).parent / "orchestra")
    print(f"import orchestra.cli   {import_seconds('orchestra.cli', args.repeat) * 1000:7.0f} ms")
    print(f"import orchestra.spec  {import_seconds('orchestra.spec', args.repeat) * 1000:7.0f} ms"
          f"   pulls in: {' '.join(heavy_modules('orchestra.spec')) or 'none of ' + ', '.join(HEAVY)}")
    with tempfile.TemporaryDirectory(prefix="orchestra-bench-cli-") as tmp:
        env = seeded_environment(Path(tmp))
        for label, command in (("python -c pass", [sys.executable, "-c", "pass"]),
                               ("import sqlalchemy.orm", [sys.executable, "-c", "import sqlalchemy.orm"])):
            median, worst = wall_seconds(command, env, args.repeat)
            print(f"{label:<21} {median * 1000:7.0f} ms median, {worst * 1000:.0f} ms max (floor)")
        for label, command in (("orchestra --help", [orchestra, "--help"]), ("orchestra runs", [orchestra, "runs"])):
            median, worst = wall_seconds(command, env, args.repeat)
            verdict = "ok" if median < 0.5 else "over the 0.5 s aim"
            print(f"{label:<21} {median * 1000:7.0f} ms median, {worst * 1000:.0f} ms max of {args.repeat}  ({verdict})")


if __name__ == "__main__":
    main()
