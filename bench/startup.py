"""Benchmark: how fast each console command starts (issue 14: ``--help`` of every command in <= 0.5 s).

Runs ``<command> --help`` for every subcommand of ``detect`` and ``backbone`` as a fresh process, ``--repeat``
times, and prints the median wall time, the peak memory (max RSS) and whether torch was imported (checked by
a second run under ``-X importtime``). The peer in the same run is ``python -c "import torch"`` — what every
command cost before the parsers stopped importing torch — and a bare ``python -c pass``.

    python bench/startup.py                 # 5 repeats
    python bench/startup.py --repeat 11
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[0] = str(REPO)  # the repo, not bench/ (bench/proposals.py would shadow the package)

from backbone.cli import COMMANDS as BACKBONE  # noqa: E402  (torch-free)
from detect.cli import COMMANDS as DETECT  # noqa: E402


def _run(argv: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and max RSS (MB) of one child process (its own rusage,
    from wait4). On a loaded machine the CPU time is the steadier figure: the wall time adds waiting."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {child.returncode}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def _imports_torch(argv: list[str]) -> bool:
    out = subprocess.run([sys.executable, "-X", "importtime", *argv[1:]], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    return any(line.rstrip().endswith("| torch") for line in out.stderr.splitlines())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    py = sys.executable
    cases = [("python -c pass", [py, "-c", "pass"]), ("python -c 'import torch' (peer)", [py, "-c", "import torch"])]
    cases += [(f"detect {name} --help", [py, "-m", "detect", name, "--help"]) for name in DETECT]
    cases += [("detect --help", [py, "-m", "detect", "--help"])]
    cases += [(f"backbone {name} --help", [py, "-m", "backbone", name, "--help"]) for name in BACKBONE]
    cases += [("backbone --help", [py, "-m", "backbone", "--help"])]
    load = os.getloadavg()
    print(f"\nCommand start-up, median of {args.repeat} runs; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")
    print(f"| {'command':<34} | {'wall s':>7} | {'CPU s':>6} | {'max RSS MB':>10} | torch | {'vs import torch':>15} |")
    print(f"|{'-' * 36}|{'-' * 9}|{'-' * 8}|{'-' * 12}|-------|{'-' * 17}|")
    peer = None
    worst = worst_cpu = 0.0
    for label, argv in cases:
        walls, cpus, rss = [], [], 0.0
        for _ in range(args.repeat):
            wall, cpu, r = _run(argv)
            walls.append(wall)
            cpus.append(cpu)
            rss = max(rss, r)
        median, cpu = statistics.median(walls), statistics.median(cpus)
        if "(peer)" in label:
            peer = median
        elif label.endswith("--help"):
            worst = max(worst, median)
            worst_cpu = max(worst_cpu, cpu)
        torch_loaded = "import torch" in label or _imports_torch(argv)
        ratio = f"{median / peer:.2f}x" if peer else "-"
        print(f"| {label:<34} | {median:7.2f} | {cpu:6.2f} | {rss:10.0f} | {'yes' if torch_loaded else 'no':<5} | {ratio:>15} |")
    print(f"\nslowest --help: {worst:.2f} s wall, {worst_cpu:.2f} s CPU (target <= 0.5 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
