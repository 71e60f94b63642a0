#!/usr/bin/env python3
"""Side-by-side CPU benchmark: reprod vs the incumbent it replaces.

One run measures, on the same machine and the same data:
  1. 100M-element float32 pair, all statistics (reprod cpu backend) vs
     numpy's abs(a-b) + mean/max/min (what reprod_log does) vs a one-pass C
     reduction of sum/max/min (the machine's yardstick) vs a read-only memory
     sweep (bandwidth limit).
  2. 5,000 pairs of 16 KiB: CompareBatch vs a numpy loop.
  3. Loading a 400 MB pickled dict (np.save(dict), as reprod_log writes):
     formats::ReadTensorFile vs np.load(allow_pickle=True).tolist().
Medians of several repetitions; writes bench/results/cpu-<date>.md and .json.

Usage: bench/run_cpu_bench.py [--build build] [--quick]
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_gbench(binary, repeats, quick):
    out = subprocess.run(
        [binary, "--benchmark_format=json", f"--benchmark_repetitions={repeats}",
         "--benchmark_report_aggregates_only=true"] + (["--benchmark_min_time=0.01"] if quick else []),
        check=True, capture_output=True, text=True).stdout
    res = {}
    for b in json.loads(out)["benchmarks"]:
        if b.get("aggregate_name") == "median":
            name = b["run_name"]
            unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b["time_unit"]]
            res[name] = b["real_time"] * unit
    return res


def find(res, prefix):
    for k, v in res.items():
        if k == prefix or k.startswith(prefix + "/"):
            return v
    raise KeyError(f"benchmark {prefix} missing; have {sorted(res)}")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = ap.parse_args()
    n = 100_000_000  # fixed: reprod_cpu_bench measures 100M elements too
    results = {"date": datetime.date.today().isoformat(), "machine": f"{cpu_model()}, {os.cpu_count()} cores",
               "numpy": np.__version__}

    # 1 + 2: C++ side from Google Benchmark.
    g = run_gbench(os.path.join(args.build, "bench", "reprod_cpu_bench"), args.repeats, args.quick)
    t_ours = find(g, "BM_DiffStats_F32")
    t_onepass = find(g, "BM_OnePassC_SumMaxMin")
    t_onepass_simd = find(g, "BM_OnePassC_SumMaxMin_Simd")
    t_bw = find(g, "BM_MemoryBandwidth")
    t_batch = find(g, "BM_Batch_5000x16KiB")

    rng = np.random.default_rng(0)
    a = rng.standard_normal(n, dtype=np.float32)
    b = a + rng.standard_normal(n, dtype=np.float32) * np.float32(1e-3)

    def numpy_reprod_log():
        d = np.abs(a - b)
        return d.mean(), d.max(), d.min()
    t_numpy = median_time(numpy_reprod_log, args.repeats)
    del a, b

    pairs = [(rng.standard_normal(4096, dtype=np.float32), rng.standard_normal(4096, dtype=np.float32))
             for _ in range(5000)]

    def numpy_loop():
        for x, y in pairs:
            d = np.abs(x - y)
            d.mean(), d.max(), d.min()
    t_numpy_loop = median_time(numpy_loop, args.repeats)
    del pairs

    # 3: a 400 MB pickled dict, as reprod_log saves it.
    size_mb = 40 if args.quick else 400
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "big_paddle.npy")
        per = 1 << 20  # 4 MiB float32 tensors
        d = {f"layer{i}.weight": rng.standard_normal(per, dtype=np.float32) for i in range(size_mb // 4)}
        np.save(path, d, allow_pickle=True)
        del d
        file_bytes = os.path.getsize(path)
        t_npload = median_time(lambda: np.load(path, allow_pickle=True).tolist(), args.repeats)
        out = subprocess.run([os.path.join(args.build, "bench", "reprod_load_bench"), path, str(args.repeats)],
                             check=True, capture_output=True, text=True).stdout
        load = json.loads(out)

    bytes_pair = n * 8
    results.update({
        "diff_100M_f32": {
            "elements": n,
            "reprod_all_stats_s": t_ours, "reprod_GBps": bytes_pair / t_ours / 1e9,
            "onepass_c_sum_max_min_s": t_onepass, "onepass_GBps": bytes_pair / t_onepass / 1e9,
            "onepass_simd_sum_max_min_s": t_onepass_simd,
            "onepass_simd_GBps": bytes_pair / t_onepass_simd / 1e9,
            "fraction_of_onepass_simd": t_onepass_simd / t_ours,
            "read_bandwidth_GBps": bytes_pair / t_bw / 1e9,
            "numpy_abs_mean_max_min_s": t_numpy,
            "speedup_vs_numpy": t_numpy / t_ours, "goal_speedup_vs_numpy": 5.0,
            "fraction_of_onepass": t_onepass / t_ours, "goal_fraction_of_onepass": 0.70,
            "fraction_of_bandwidth": t_bw / t_ours,
        },
        "batch_5000x16KiB": {
            "reprod_s": t_batch, "numpy_loop_s": t_numpy_loop,
            "speedup_vs_numpy": t_numpy_loop / t_batch, "goal_speedup_vs_numpy": 20.0,
        },
        "load_pickled_dict": {
            "file_bytes": file_bytes, "tensors": load["tensors"],
            "np_load_tolist_s": t_npload,
            "reprod_parse_s": load["parse_s"], "reprod_parse_and_read_s": load["parse_and_read_s"],
            "speedup_parse": t_npload / load["parse_s"],
            "speedup_parse_and_read": t_npload / load["parse_and_read_s"], "goal_speedup": 3.0,
        },
    })
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    stem = os.path.join(ROOT, "bench", "results", f"cpu-{results['date']}{'-quick' if args.quick else ''}")
    with open(stem + ".json", "w") as f:
        json.dump(results, f, indent=2)
    d1, d2, d3 = results["diff_100M_f32"], results["batch_5000x16KiB"], results["load_pickled_dict"]
    md = f"""# CPU benchmark, {results['date']}

Machine: {results['machine']}; numpy {results['numpy']}. Medians of {args.repeats} runs, one process
each side, same data sizes. Produced by `bench/run_cpu_bench.py`{' --quick' if args.quick else ''}.

| case | reprod | incumbent / yardstick | ratio | goal |
|---|---|---|---|---|
| {n/1e6:.0f}M float32 pair, all stats vs numpy abs(a-b)+mean/max/min | {d1['reprod_all_stats_s']*1e3:.1f} ms ({d1['reprod_GBps']:.2f} GB/s) | {d1['numpy_abs_mean_max_min_s']*1e3:.1f} ms | {d1['speedup_vs_numpy']:.1f}x faster | >= 5x |
| same, vs one-pass C sum/max/min | | {d1['onepass_c_sum_max_min_s']*1e3:.1f} ms ({d1['onepass_GBps']:.2f} GB/s) | {100*d1['fraction_of_onepass']:.0f}% of its throughput | >= 70% |
| same, vs hand-vectorised one-pass sum/max/min (AVX) | | {d1['onepass_simd_sum_max_min_s']*1e3:.1f} ms ({d1['onepass_simd_GBps']:.2f} GB/s) | {100*d1['fraction_of_onepass_simd']:.0f}% of its throughput | |
| same, vs read-only memory sweep | | {d1['read_bandwidth_GBps']:.2f} GB/s | {100*d1['fraction_of_bandwidth']:.0f}% of bandwidth | |
| 5,000 pairs of 16 KiB vs numpy loop | {d2['reprod_s']*1e3:.2f} ms | {d2['numpy_loop_s']*1e3:.1f} ms | {d2['speedup_vs_numpy']:.1f}x faster | >= 20x |
| load {d3['file_bytes']/1e6:.0f} MB pickled dict ({d3['tensors']} tensors), parse (mmap, zero copy) | {d3['reprod_parse_s']*1e3:.2f} ms | np.load(...).tolist() {d3['np_load_tolist_s']*1e3:.1f} ms | {d3['speedup_parse']:.0f}x faster | >= 3x |
| same, parse + read every byte once | {d3['reprod_parse_and_read_s']*1e3:.2f} ms | | {d3['speedup_parse_and_read']:.1f}x faster | >= 3x |
"""
    with open(stem + ".md", "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
