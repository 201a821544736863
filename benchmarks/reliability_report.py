"""Regenerate the generated tables of ``docs/reliability.md`` from a run of the reliability suite.

    .venv/bin/python benchmarks/reliability_report.py           # pytest -m reliability, then the tables
    .venv/bin/python benchmarks/reliability_report.py --soak    # the same plus the soak test (MMKIT_SOAK=1)

Runs ``pytest -m reliability`` with ``MMKIT_RELIABILITY_SUMMARY`` pointing at a temporary JSON
file, which the suite's ``ledger`` fixture fills (tests/test_reliability.py). Writes nothing when a
test fails. Otherwise replaces the text between ``<!-- BEGIN generated:<name> -->`` and
``<!-- END generated:<name> -->`` in the doc for ``figures``, ``faults`` and ``bad-inputs``; the
numbers are the suite's, never typed in.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mmkit.core.io import atomic_write_text  # noqa: E402


def _cell(text: str, limit: int = 240) -> str:
    text = text if len(text) <= limit else text[:limit - 1] + "…"
    return text.replace("|", "\\|")


def render(summary: dict, pytest_line: str, soak: bool) -> dict[str, str]:
    """The three generated blocks (Markdown) from the ledger ``summary``."""
    soak_faults = [f for f in summary["faults"] if f["scenario"].startswith("soak")]
    plain_faults = [f for f in summary["faults"] if not f["scenario"].startswith("soak")]
    figures = [
        "| figure | value |", "|---|---:|",
        f"| bad inputs tried (error type and message checked) | {len(summary['bad_inputs'])} |",
        f"| corrupt files tried (truncations and byte flips of checkpoints, best models, run files, bundles) "
        f"| {summary['corrupt_files']} |",
        f"| faults injected (SIGKILL mid-epoch and mid-write, full disk mid-write) | {len(summary['faults'])} |",
        f"| runs resumed after a kill | {summary['resumes']} |",
        f"| data lost (results differing from an uninterrupted run, files left half-written) | {summary['data_lost']} |",
        "",
        f"Generated {time.strftime('%Y-%m-%d')} by `.venv/bin/python benchmarks/reliability_report.py"
        f"{' --soak' if soak else ''}` (pytest: {pytest_line}; soak test {'included' if soak else 'not run'}).",
    ]
    faults = ["| scenario | fault (`MMKIT_FAULT`) | outcome |", "|---|---|---|"]
    faults += [f"| {_cell(f['scenario'])} | `{f['fault']}` | {_cell(f['outcome'])} |" for f in plain_faults]
    if soak_faults:
        kinds = Counter(f["scenario"].rsplit(": ", 1)[-1] for f in soak_faults)
        faults.append(f"| soak: {len(soak_faults)} random faults "
                      f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}) | random | every run, resumed until "
                      "it finished, equal to the uninterrupted run |")
    bad = ["| case | error | message the user sees |", "|---|---|---|"]
    bad += [f"| {_cell(b['case'])} | `{b['error']}` | {_cell(b['message'])} |" for b in summary["bad_inputs"]]
    return {"figures": "\n".join(figures), "faults": "\n".join(faults), "bad-inputs": "\n".join(bad)}


def replace_blocks(doc: str, blocks: dict[str, str]) -> str:
    for name, body in blocks.items():
        pattern = re.compile(rf"(<!-- BEGIN generated:{name} -->\n).*?(\n<!-- END generated:{name} -->)", re.S)
        if not pattern.search(doc):
            raise SystemExit(f"no generated:{name} markers in the doc")
        doc = pattern.sub(lambda m: m.group(1) + body + m.group(2), doc)
    return doc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soak", action="store_true", help="also run the soak test (long: MMKIT_SOAK=1)")
    parser.add_argument("--doc", default=str(REPO / "docs" / "reliability.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        summary_path = Path(tmp) / "summary.json"
        env = {**os.environ, "MMKIT_RELIABILITY_SUMMARY": str(summary_path), "OMP_NUM_THREADS": "1"}
        env.pop("MMKIT_FAULT", None)
        if args.soak:
            env["MMKIT_SOAK"] = "1"
        done = subprocess.run([sys.executable, "-m", "pytest", "-m", "reliability", "-q", "-p", "no:cacheprovider"],
                              cwd=REPO, env=env, capture_output=True, text=True)
        print(done.stdout[-2000:], done.stderr[-2000:], sep="\n")
        if done.returncode != 0:
            print("the reliability suite failed: the doc is left unchanged")
            return 1
        summary = json.loads(summary_path.read_text())
    pytest_line = done.stdout.strip().splitlines()[-1].strip("= ")
    pytest_line = re.sub(r" in [\d.]+s.*$", "", pytest_line)
    doc = Path(args.doc)
    atomic_write_text(doc, replace_blocks(doc.read_text(), render(summary, pytest_line, args.soak)))
    print(f"wrote {doc}: {len(summary['bad_inputs'])} bad inputs, {summary['corrupt_files']} corrupt files, "
          f"{len(summary['faults'])} faults, {summary['resumes']} resumes, {summary['data_lost']} data lost")
    return 0


if __name__ == "__main__":
    sys.exit(main())
