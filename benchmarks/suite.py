"""The benchmark suite: every benchmark script, one fresh process each, one after another, into one table.

    make benchmark                                  (all of it: about 40 minutes on 2 CPU cores)
    python benchmarks/suite.py --only startup vs_lightning   (the table keeps the others' last records)
    python benchmarks/suite.py --quick              (fewer rounds; no time-to-accuracy runs)

Each script writes its JSON record (figures, the machine) into benchmarks/results/; the suite gathers
them into benchmarks/results/suite.json and a markdown table, benchmarks/results/suite.md (the table of
README's Performance section), and prints the table. Nothing else should run on the machine meanwhile:
every figure is a ratio or a time measured here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, machine

HERE = Path(__file__).parent

# name -> (script, its arguments, its --quick arguments); in the order of issue 12's list
BENCHMARKS = {
    "trainer_vs_plain": ("trainer_vs_plain.py", ["--rounds", "5"], ["--rounds", "2", "--steps", "30"]),
    "augmentation_vs_torchvision": ("augmentation_vs_torchvision.py", [], ["--rounds", "2", "--images", "8000"]),
    "vs_lightning": ("vs_lightning.py", [], ["--rounds", "2", "--steps", "50"]),
    "startup": ("startup.py", [], ["--rounds", "2"]),
    "peak_memory": ("peak_memory.py", [], ["--rounds", "1"]),
    "auto_choices": ("auto_choices.py", [], ["--rounds", "1", "--steps", "8"]),
    "data_parallel": ("data_parallel.py", [], ["--rounds", "1", "--steps", "10", "--train-size", "4000"]),
    "time_to_accuracy_fmnist_speedrun": ("time_to_accuracy.py", ["--experiment", "fmnist_speedrun"], None),
    "time_to_accuracy_default": ("time_to_accuracy.py", ["--experiment", "default"], None),
}


def value_text(item: dict) -> str:
    value, unit = item["value"], item["unit"]
    if unit == "acc":
        return f"{value:.2%}"
    if unit == "x":
        return f"{value:g}x"
    return f"{value:g} {unit}"


def markdown(records: list[dict], host: dict) -> str:
    lines = [f"Machine: {host['cpu']}, {host['cores']} cores, {host['torch_threads']} torch threads"
             + (f", {host['gpu']}" if host.get("gpu") else ", no GPU")
             + f"; torch {host['torch']}, Python {host['python']}.", "",
             "| benchmark | figure | value | target | met |", "|---|---|---|---|---|"]
    for record in records:
        for item in record["figures"]:
            met = {True: "yes", False: "**no**", None: ""}[item["met"]]
            lines.append(f"| {record['benchmark']} | {item['name']} | {value_text(item)} | {item['target'] or ''} "
                         f"| {met} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run only these")
    parser.add_argument("--quick", action="store_true", help="fewer rounds; skip the time-to-accuracy runs")
    args = parser.parse_args()
    chosen = [name for name in BENCHMARKS if not args.only or name in args.only]
    records, failed = [], []
    for name in chosen:
        script, arguments, quick = BENCHMARKS[name]
        if args.quick and quick is None and not args.only:
            continue
        out = RESULTS / f"{name}.json"
        command = [sys.executable, str(HERE / script), *(quick if args.quick and quick else arguments),
                   "--json", str(out)]
        print(f"== {name}: {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        if subprocess.run(command).returncode != 0:
            failed.append(name)
            print(f"== {name}: FAILED", flush=True)
            continue
        records.append(json.loads(out.read_text()))
        print(f"== {name}: {time.perf_counter() - started:.0f} s", flush=True)
    if args.only:  # the table keeps the other benchmarks' last records (a re-run replaces only its own)
        ran = {record["benchmark"] for record in records}
        kept = [json.loads((RESULTS / f"{name}.json").read_text()) for name in BENCHMARKS
                if name not in args.only and (RESULTS / f"{name}.json").is_file()]
        order = list(BENCHMARKS)
        records = sorted(records + [r for r in kept if r["benchmark"] not in ran],
                         key=lambda r: order.index(r["benchmark"]) if r["benchmark"] in order else len(order))
    host = machine()
    table = markdown(records, host)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "suite.json").write_text(json.dumps({"machine": host, "records": records, "failed": failed},
                                                   indent=2) + "\n")
    (RESULTS / "suite.md").write_text(table)
    print("\n" + table)
    print(f"written: {RESULTS / 'suite.json'}, {RESULTS / 'suite.md'}")
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
