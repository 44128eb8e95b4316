"""Python's torch.save / torch.load on the benchmark's state (snapshot_bench runs it).

  torch_python_baseline.py SHAPES_JSON DIRECTORY REPS

SHAPES_JSON lists the parameter sizes (elements) of the C++ workload; the same
parameters get Adam state. Prints one JSON object: median times (ms) and peak
extra resident memory (bytes) of torch.save + fsync and of torch.load +
load_state_dict of model and optimizer, with the page cache dropped first.
"""

import json
import os
import sys
import time

import torch


def status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError("no %s in /proc/self/status" % field)


def measure(reps, prepare, operation):
    times, peaks = [], []
    for _ in range(reps):
        prepare()
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        start_kib = status_kib("VmRSS")
        start = time.perf_counter()
        operation()
        times.append((time.perf_counter() - start) * 1000)
        peaks.append(max(0, status_kib("VmHWM") - start_kib) * 1024)
    times.sort()
    peaks.sort()
    return {"ms": times[len(times) // 2], "peak_bytes": peaks[len(peaks) // 2]}


def main():
    shapes_path, directory, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(shapes_path) as f:
        numels = json.load(f)
    torch.set_num_threads(1)
    model = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(n)) for n in numels])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    path = os.path.join(directory, "python.pt")

    def save():
        torch.save({"model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict()}, path)
        fd = os.open(path, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)

    def drop_cache():
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)

    def load():
        checkpoint = torch.load(path, map_location="cpu")
        model.load_state_dict(checkpoint["model_state_dict"])
        optimizer.load_state_dict(checkpoint["optimizer_state_dict"])

    result = {"save": measure(reps, lambda: None, save), "load": measure(reps, drop_cache, load)}
    os.remove(path)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
