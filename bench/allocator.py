"""What the allocator policy (conf key ``allocator``, ``distillab/process.py``) costs and saves.

Each policy runs in fresh subprocesses, alternating, on two workloads: the KD + CE train step of
``bench/kd_step.py`` (SmolLM2-135M 30 -> 24 layers, batch 4 x 256, the experiments' shape; bf16
where the CPU runs it natively) and the ``multi_signal`` objective of ``bench/objectives_memory.py``
(attention transfer over every layer pair: the workload whose peak memory the ``release`` policy was
made for). Printed per policy: median step time, peak RSS, kernel (system) CPU seconds and minor
page faults of the child, and the time and memory ratios against ``release`` (the default before
2026-12-01) measured in the same run.

    python bench/allocator.py                # real model (make models)
    python bench/allocator.py --tiny         # tiny random Llama, seconds
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
POLICIES = ("release", "reuse", "glibc")  # release first: the baseline


def run_child(command: list[str]) -> dict:
    """Run one bench child; its JSON line plus the kernel time and page faults it caused."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"bench child failed: {' '.join(command)}\n{out.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["sys_s"] = after.ru_stime - before.ru_stime
    result["user_s"] = after.ru_utime - before.ru_utime
    result["minor_faults"] = after.ru_minflt - before.ru_minflt
    return result


def workloads(args, precision: str) -> dict[str, list[str]]:
    common = ["--threads", str(args.threads)] + (["--tiny"] if args.tiny else [])
    return {
        f"KD+CE step ({precision}, 4 x 256)": [
            sys.executable, str(HERE / "kd_step.py"), *common, "--steps", "4", "--warmup", "2",
            "--precision", precision, "--child", "eager",
        ],
        "multi_signal step (float32, 2 x 512)": [
            sys.executable, str(HERE / "objectives_memory.py"), *common, "--steps", "2", "--warmup", "1",
            "--child", "multi_signal",
        ],
    }  # fmt: skip


def step_seconds(result: dict, tokens: int) -> float:
    return result["step_s"] if "step_s" in result else tokens / result["tokens_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--precision", choices=["float32", "bf16"], help="KD step precision; default: bf16 where native"
    )
    args = parser.parse_args()
    from machine import describe, header

    info = describe(args.threads)
    print(header(info))
    precision = args.precision or ("bf16" if info["native_bf16"] else "float32")
    for name, command in workloads(args, precision).items():
        runs: dict[str, list[dict]] = {p: [] for p in POLICIES}
        for _ in range(args.repeats):
            for policy in POLICIES:  # alternate so drift on the machine hits every policy alike
                runs[policy].append(run_child([*command, "--allocator", policy]))
        tokens = 4 * 256
        med = {
            p: {
                "step_s": statistics.median(step_seconds(r, tokens) for r in rs),
                **{
                    k: statistics.median(r[k] for r in rs)
                    for k in ("peak_rss_mb", "sys_s", "user_s", "minor_faults")
                },
            }
            for p, rs in runs.items()
        }
        base = med["release"]
        print(
            f"{name}, median of {args.repeats} fresh processes per policy (whole child process for CPU s and faults):"
        )
        print(
            f"  {'policy':8s} {'step s':>7s} {'x time':>7s} {'peak RSS MB':>12s} {'x RSS':>6s} {'sys s':>7s} {'user s':>7s} {'minor faults':>13s}"
        )
        for p, m in med.items():
            print(
                f"  {p:8s} {m['step_s']:7.2f} {m['step_s'] / base['step_s']:7.3f} {m['peak_rss_mb']:12.1f} "
                f"{m['peak_rss_mb'] / base['peak_rss_mb']:6.3f} {m['sys_s']:7.1f} {m['user_s']:7.1f} {m['minor_faults']:13,.0f}"
            )


if __name__ == "__main__":
    main()
