"""Draws the benchmark's JSON (snapshot_bench --json) as the README's chart.

  bench_chart.py bench.json chart.png
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def ms(figure):
    return figure["ms"] if figure else float("nan")


def main():
    with open(sys.argv[1]) as f:
        report = json.load(f)
    workloads = report["workloads"]
    fig, (ratios, speeds) = plt.subplots(1, 2, figsize=(13, 5))

    # Left: time relative to LibTorch's own (torch::save for saves, torch::load for loads).
    series = [
        ("autosnap::save", lambda w: ms(w["autosnap"]["save"]) / ms(w["libtorch"]["torch_save"])),
        ("Python torch.save", lambda w: ms(w["python"].get("save")) / ms(w["libtorch"]["torch_save"])),
        ("autosnap::load", lambda w: ms(w["autosnap"]["load"]) / ms(w["libtorch"]["torch_load"])),
        ("Python torch.load", lambda w: ms(w["python"].get("load")) / ms(w["libtorch"]["torch_load"])),
        ("restore_latest", lambda w: ms(w["autosnap"]["restore"]) / ms(w["libtorch"]["torch_load"])),
    ]
    width = 0.8 / len(series)
    for i, (name, value) in enumerate(series):
        xs = [k + (i - (len(series) - 1) / 2) * width for k in range(len(workloads))]
        ratios.bar(xs, [value(w) for w in workloads], width, label=name)
    ratios.axhline(1.0, color="black", linewidth=0.8)
    ratios.set_xticks(range(len(workloads)))
    ratios.set_xticklabels(["%s\n(%d tensors)" % (w["label"], w["tensors"]) for w in workloads])
    ratios.set_ylabel("time / LibTorch's (torch::save or torch::load)")
    ratios.set_title("lower is better; 1.0 = LibTorch")
    ratios.legend(fontsize=8)

    # Right: throughput against the disk's and memory's limits, by checkpoint size.
    dense = [w for w in workloads if w["label"].endswith(" MB")]
    sizes = [w["bytes"] / 1e6 for w in dense]

    def rate(get):
        return [w["bytes"] / 1e3 / get(w) for w in dense]

    lines = [
        ("write + fsync (disk limit, best of buffered and O_DIRECT)",
         lambda w: min(w["limits"]["write_fsync"]["ms"], w["limits"]["direct_write_fsync"]["ms"]), "k--"),
        ("cold read (disk limit)", lambda w: w["limits"]["cold_read"]["ms"], "k:"),
        ("torch::save", lambda w: ms(w["libtorch"]["torch_save"]), "C0-o"),
        ("autosnap::save", lambda w: ms(w["autosnap"]["save"]), "C1-o"),
        ("torch::load", lambda w: ms(w["libtorch"]["torch_load"]), "C2-s"),
        ("autosnap::load", lambda w: ms(w["autosnap"]["load"]), "C3-s"),
        ("restore_latest", lambda w: ms(w["autosnap"]["restore"]), "C4-^"),
    ]
    for name, get, style in lines:
        speeds.plot(sizes, rate(get), style, label=name)
    speeds.set_xscale("log")
    speeds.set_xticks(sizes)
    speeds.set_xticklabels(["%.0f" % s for s in sizes])
    speeds.set_xlabel("checkpoint size (MB)")
    speeds.set_ylabel("MB/s (higher is better)")
    speeds.set_title("throughput, cold page cache for loads")
    speeds.legend(fontsize=8)

    fig.suptitle("autosnap vs torch::save / torch::load: %s, LibTorch 1.13 with %d thread, medians of %d"
                 % (report["machine"], report["torch_threads"], report["reps"]), fontsize=10)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=90)


if __name__ == "__main__":
    main()
