"""Runs one benchmark command and records how loaded the machine was while it ran.

Usage: engine_cpu_load.py LABEL LOAD.jsonl -- COMMAND [ARG ...]

The command's stdout and stderr pass through. Appends one JSON object to LOAD.jsonl:
wall seconds, the CPU seconds the command itself used (its process tree, from the kernel's
accounting of waited-for children), the CPU seconds the whole machine was busy (/proc/stat),
so the difference is what other processes took while it ran, the steal time the hypervisor
reports, and the 1-minute load average before and after. On a shared machine this is what
says how far to trust the figures of that run.
"""

import json
import os
import resource
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def cpu_times() -> dict:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    return {"busy": (user + nice + system + irq + softirq) / TICK, "steal": steal / TICK}


def loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def main() -> int:
    if len(sys.argv) < 5 or sys.argv[3] != "--":
        sys.stderr.write(__doc__)
        return 2
    label, out, command = sys.argv[1], sys.argv[2], sys.argv[4:]
    load_before = loadavg()
    before, children_before = cpu_times(), resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    status = subprocess.call(command)
    wall = time.monotonic() - start
    after, children = cpu_times(), resource.getrusage(resource.RUSAGE_CHILDREN)
    own = (children.ru_utime - children_before.ru_utime) + (children.ru_stime - children_before.ru_stime)
    machine = after["busy"] - before["busy"]
    record = {
        "label": label,
        "wall_s": round(wall, 2),
        "own_cpu_s": round(own, 2),
        "machine_cpu_s": round(machine, 2),
        "others_cores": round(max(machine - own, 0.0) / wall, 2) if wall > 0 else 0.0,
        "steal_cores": round((after["steal"] - before["steal"]) / wall, 2) if wall > 0 else 0.0,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "exit_status": status,
    }
    with open(out, "a") as f:
        f.write(json.dumps(record) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
