#!/usr/bin/env python3
"""report.py -- turn one results directory into a ratio table, PNGs and
summary.json.

    report.py RESULTS_DIR [--quiet]

Reads what scripts/bench.sh leaves in RESULTS_DIR:
    bench-<alloc>.1t-<i>.json Google Benchmark JSON, 1-thread patterns,
                              one process per repetition (older runs:
                              bench-<alloc>.json, all in one process)
    bench-<alloc>.2t-<i>.json the 2-thread workloads, one process each
    floor.1t-<i>.json         the floor (benchmarks/floor.c), 1-thread
                              patterns (older runs: floor.json)
    latency-<alloc>.json      per-put latency percentiles (latency.c)
    latency-<alloc>.hist.csv  per-put latency histogram
    latency-<alloc>.strace[.gz]  strace -f -ttt of a second latency run
                              (optional: syscalls inside the put phases)
    rss-<alloc>.json/.csv     RSS over time (rss.c)
    direct-pairs-<i>.json     the 1-thread patterns as a plain C loop,
                              deferpool against mimalloc, tcmalloc and
                              jemalloc in one process, one file per
                              process (direct_pairs.c; older runs:
                              direct-pairs.json, one process)
    meta.json                 machine and run description (optional)
Writes into RESULTS_DIR: summary.json, table.md, latency_cdf.png, rss.png.
Prints the table.

Every ratio is against jemalloc measured in the same run (jemalloc = 1.00).
Times: lower is better.  Throughputs: higher is better.
Plots use matplotlib when it imports, else gnuplot, else are skipped.
"""
import csv
import glob
import gzip
import json
import math
import statistics
import os
import re
import shutil
import subprocess
import sys

ORDER = ["deferpool", "deferpool-immediate", "jemalloc", "glibc", "mimalloc",
         "tcmalloc"]
REF = "jemalloc"

# (key, GB benchmark name, label, kind) -- kind "time": ns per get+put pair
# (CPU time of the one thread); "tput": Mops/s over both threads (wall).
BENCHES = [
    ("lifo_pair", "lifo_pair", "1T LIFO get+put pair", "time"),
    ("batch_100", "batch/100", "1T batch 100 live", "time"),
    ("batch_10000", "batch/10000", "1T batch 10,000 live", "time"),
    ("batch_200000", "batch/200000", "1T batch 200,000 live", "time"),
    ("prodcons", "prodcons/real_time/threads:2",
     "2T producer->consumer (all puts remote)", "tput"),
    ("random2t", "random2t/real_time/threads:2",
     "2T random get/put, 1/2 puts remote", "tput"),
]
NOISY_CV = 0.05
RESULT_FILE = re.compile(r"^(?:bench|latency|rss)-(.+?)(?:\.[12]t-\d+)?\.json$")
SINGLE = ["lifo_pair", "batch_100", "batch_10000", "batch_200000"]


def order_key(a):
    return (ORDER.index(a) if a in ORDER else len(ORDER), a)


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def geomean(xs):
    xs = [x for x in xs if x is not None and x > 0]
    if not xs:
        return None
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


# --------------------------------------------------------------------------
# Google Benchmark results
# --------------------------------------------------------------------------

def gb_measured(r):
    """A repetition that measured something (not an aggregate, no error)."""
    return (r.get("run_type", "iteration") == "iteration"
            and not r.get("error_occurred"))


def gb_value(runs, kind):
    """Median and coefficient of variation over all repetitions, whether
    they ran in one process or in several (scripts/bench.sh runs each
    repetition as a process of its own)."""
    vals = sorted(x for x in (gb_one(r, kind) for r in runs
                              if gb_measured(r))
                  if x is not None)
    if not vals:
        return None, None, []
    n = len(vals)
    med = vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2
    cv = None
    if n > 1:
        mean = sum(vals) / n
        sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
        cv = sd / mean if mean else None
    return med, cv, vals


def gb_one(r, kind):
    if r is None:
        return None
    if kind == "time":
        scale = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}[r.get("time_unit",
                                                               "ns")]
        return r["cpu_time"] * scale       # one iteration = one pair
    ips = r.get("items_per_second")
    return ips / 1e6 if ips else None      # Mops/s


ROUND_FILE = re.compile(r"\.[12]t-(\d+)\.json$")


def read_runs(files):
    """Runs by benchmark name, and each run's round (the <i> of a
    *.1t-<i>.json / *.2t-<i>.json file; None for a file of repetitions)."""
    by = {}
    for p in files:
        m = ROUND_FILE.search(p)
        rnd = int(m.group(1)) if m else None
        for r in (load_json(p) or {}).get("benchmarks", []):
            by.setdefault(r.get("run_name", r["name"]), []).append((rnd, r))
    return by


def bench_entry(runs, kind):
    v, cv, vals = gb_value([r for _, r in runs], kind)
    rounds = {}
    for rnd, r in runs:
        if rnd is not None and gb_measured(r):
            x = gb_one(r, kind)
            if x is not None:
                rounds[rnd] = x
    return {"value": v, "cv": cv, "all": vals, "rounds": rounds}


def read_bench(d, allocs):
    out = {}
    for a in allocs:
        # bench-<a>.json: the 1-thread repetitions in one process (runs
        # before 2026-11-26 04:15 UTC); bench-<a>.1t-<i>.json: one process
        # per repetition; bench-<a>.2t-<i>.json: the 2-thread workloads.
        files = [os.path.join(d, "bench-%s.json" % a)]
        files += sorted(glob.glob(os.path.join(d, "bench-%s.[12]t-*.json" % a)))
        by = read_runs(files)
        for key, gbname, _, kind in BENCHES:
            if gbname in by:
                out.setdefault(key, {})[a] = bench_entry(by[gbname], kind)
    return out


def paired_ratio(e, ref):
    """The ratio of two entries of one benchmark.  When both ran in
    numbered rounds, the allocators one after the other within a round:
    the median over the shared rounds of the ratio within each round, so
    that a busy spell of the host, which comes and goes and slows every
    allocator that runs during it, cancels out.  Otherwise the ratio of
    the medians."""
    if not e or not ref:
        return None
    shared = sorted(set(e.get("rounds", {})) & set(ref.get("rounds", {})))
    rs = [e["rounds"][i] / ref["rounds"][i] for i in shared
          if ref["rounds"][i]]
    if rs:
        return statistics.median(rs)
    return ratio_of(e.get("value"), ref.get("value"))


# --------------------------------------------------------------------------
# strace: system calls made inside the put phase
# --------------------------------------------------------------------------

LINE = re.compile(r"^(\d+)\s+(?:[\d.]+\s+)?(.*)$")
NAME = re.compile(r"^([a-z_0-9]+)\(")


def count_syscalls(path):
    """Main thread: every syscall strictly between its free-begin and
    free-end marker writes is one a put made (the phase does nothing else).
    Other threads: syscalls they started while the main thread was inside a
    phase (by position in strace's output: approximate)."""
    main = {}
    other = {}
    phases = 0
    main_tid = None
    inside = False
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            tid, rest = int(m.group(1)), m.group(2)
            if "dpb-latency free-begin" in rest:
                main_tid, inside = tid, True
                phases += 1
                continue
            if "dpb-latency free-end" in rest:
                inside = False
                continue
            if not inside or rest.startswith(("<...", "---", "+++")):
                continue
            n = NAME.match(rest)
            if not n:
                continue
            bucket = main if tid == main_tid else other
            bucket[n.group(1)] = bucket.get(n.group(1), 0) + 1
    return {"phases": phases, "put_thread": main,
            "put_thread_total": sum(main.values()),
            "other_threads": other,
            "other_threads_total": sum(other.values())}


def read_latency(d, allocs):
    out = {}
    for a in allocs:
        j = load_json(os.path.join(d, "latency-%s.json" % a))
        if not j:
            continue
        st = os.path.join(d, "latency-%s.strace" % a)
        if not os.path.exists(st):
            st += ".gz"
        j["syscalls"] = count_syscalls(st) if os.path.exists(st) else None
        hist = []
        hp = os.path.join(d, "latency-%s.hist.csv" % a)
        if os.path.exists(hp):
            with open(hp) as f:
                for row in csv.DictReader(f):
                    hist.append((float(row["ns"]), int(row["count"])))
        j["_hist"] = hist
        out[a] = j
    return out


def read_rss(d, allocs):
    out = {}
    for a in allocs:
        j = load_json(os.path.join(d, "rss-%s.json" % a))
        if not j:
            continue
        rows = []
        cp = os.path.join(d, "rss-%s.csv" % a)
        if os.path.exists(cp):
            with open(cp) as f:
                for row in csv.DictReader(f):
                    rows.append((int(row["t_ms"]) / 1000.0,
                                 int(row["rss_kib"]) / 1024.0, row["phase"]))
        j["_series"] = rows
        out[a] = j
    return out


# --------------------------------------------------------------------------
# Table and targets
# --------------------------------------------------------------------------

def fmt(v, kind):
    if v is None:
        return "-"
    if kind == "tput":
        return "%.1f" % v
    if v >= 1000:
        return "%.0f" % v
    return "%.1f" % v if v >= 10 else "%.2f" % v


def ratio_of(v, ref):
    if v is None or ref is None or ref == 0:
        return None
    return v / ref


def status(ok):
    if ok is None:
        return "n/a"
    return "PASS" if ok else "MISS"


def build(d):
    allocs = set()
    for p in glob.glob(os.path.join(d, "*.json")):
        m = RESULT_FILE.match(os.path.basename(p))
        if m:
            allocs.add(m.group(1))
    allocs = sorted(allocs, key=order_key)
    bench = read_bench(d, allocs)
    lat = read_latency(d, allocs)
    rss = read_rss(d, allocs)
    meta = load_json(os.path.join(d, "meta.json")) or {}

    S = {"meta": meta, "allocators": allocs, "reference": REF,
         "benchmarks": {}, "geomean_single_thread": {}, "latency": {},
         "rss": {}, "targets": []}

    for key, _, label, kind in BENCHES:
        row = bench.get(key, {})
        e = {"label": label,
             "unit": "ns per get+put pair (CPU time)" if kind == "time"
             else "Mops/s, both threads (wall time)",
             "better": "lower" if kind == "time" else "higher",
             "values": {}}
        for a in allocs:
            v = row.get(a, {}).get("value")
            e["values"][a] = {"value": v,
                              "ratio": paired_ratio(row.get(a),
                                                    row.get(REF)),
                              "cv": row.get(a, {}).get("cv"),
                              "repetitions": row.get(a, {}).get("all", []),
                              "rounds": row.get(a, {}).get("rounds", {})}
        S["benchmarks"][key] = e

    for a in allocs:
        ns = [S["benchmarks"][k]["values"][a]["value"] for k in SINGLE]
        rt = [S["benchmarks"][k]["values"][a]["ratio"] for k in SINGLE]
        complete = all(x is not None for x in ns)
        S["geomean_single_thread"][a] = {
            "ns": geomean(ns) if complete else None,
            "ratio": geomean(rt) if complete and all(rt) else None}

    for a in allocs:
        if a in lat:
            j = {k: v for k, v in lat[a].items() if not k.startswith("_")}
            S["latency"][a] = j
        if a in rss:
            j = {k: v for k, v in rss[a].items() if not k.startswith("_")}
            S["rss"][a] = j

    # The floor (benchmarks/floor.c, floor.1t-<i>.json): a thread-local pointer
    # stack behind the same calls, not an allocator.  Its 1T numbers and
    # their ratios to jemalloc show how low a ratio can go at all.
    ffiles = [os.path.join(d, "floor.json")] + sorted(
        glob.glob(os.path.join(d, "floor.1t-*.json")))
    if any(os.path.exists(p) for p in ffiles):
        by = read_runs(ffiles)
        fl = {}
        for key, gbname, _, kind in BENCHES:
            if key in SINGLE and gbname in by:
                fe = bench_entry(by[gbname], kind)
                fl[key] = {"value": fe["value"],
                           "ratio": paired_ratio(fe, bench.get(key, {})
                                                 .get(REF))}
        ns = [fl.get(k, {}).get("value") for k in SINGLE]
        rt = [fl.get(k, {}).get("ratio") for k in SINGLE]
        ok = all(x is not None for x in ns + rt)
        S["floor"] = {"what": "benchmarks/floor.c: unbounded thread-local "
                              "pointer stack, not an allocator",
                      "benchmarks": fl,
                      "geomean_ns": geomean(ns) if ok else None,
                      "geomean_ratio": geomean(rt) if ok else None}

    # Direct pairs (direct_pairs.c): best-of-rounds ns per pair, in one
    # or more processes.  ns: the median over the processes; a ratio of
    # two allocators: the median over the processes of the ratio within
    # each (both ran in the same address space).
    procs = [j for j in (load_json(f) for f in sorted(glob.glob(
        os.path.join(d, "direct-pairs-*.json")))) if j]
    if not procs:
        procs = [j for j in [load_json(os.path.join(
            d, "direct-pairs.json"))] if j]
    if procs:
        pats = procs[0]["patterns"]
        names = [a for a in procs[0]["ns"]
                 if all(a in j["ns"] for j in procs)]
        ns = {a: [statistics.median(j["ns"][a][k] for j in procs)
                  for k in range(len(pats))] for a in names}
        gm = {a: statistics.median(geomean(j["ns"][a]) for j in procs)
              for a in names}

        def dratio(a, b):
            """Per pattern, then the geomean: medians of in-process
            ratios; b may be a function of one process's ns."""
            if a not in names:
                return None
            ref = b if callable(b) else (
                lambda j, k: j["ns"][b][k] if b in names else None)
            if any(ref(j, 0) is None for j in procs):
                return None
            per = [statistics.median(j["ns"][a][k] / ref(j, k)
                                     for j in procs)
                   for k in range(len(pats))]
            g = statistics.median(
                geomean(j["ns"][a]) /
                geomean([ref(j, k) for k in range(len(pats))])
                for j in procs)
            return {"patterns": per, "geomean": g}

        best2 = (lambda j, k: min(j["ns"]["mimalloc"][k],
                                  j["ns"]["tcmalloc"][k])
                 if "mimalloc" in j["ns"] and "tcmalloc" in j["ns"]
                 else None)
        S["direct_pairs"] = {
            "patterns": pats, "ns": ns, "geomean_ns": gm,
            "rounds": procs[0]["rounds"], "processes": len(procs),
            "ratio": {"mimalloc": dratio("deferpool", "mimalloc"),
                      "tcmalloc": dratio("deferpool", "tcmalloc"),
                      "best_of_mi_tc": dratio("deferpool", best2)}}

    # Targets (the issue's): deferpool against jemalloc and mimalloc.
    dp = "deferpool"
    T = S["targets"]
    g = S["geomean_single_thread"]

    gr = g.get(dp, {}).get("ratio")
    T.append({"target": "1T geomean <= 0.40x jemalloc",
              "value": gr, "status": status(None if gr is None
                                            else gr <= 0.40)})
    # Against mimalloc: the geomean over the patterns of the paired
    # (per-round) ratio deferpool/mimalloc, like the ratios to jemalloc.
    dm = [paired_ratio(bench.get(k, {}).get(dp), bench.get(k, {})
                       .get("mimalloc")) for k in SINGLE]
    gdm = geomean(dm) if all(x is not None for x in dm) else None
    T.append({"target": "1T geomean faster than mimalloc",
              "value": gdm, "unit": "deferpool/mimalloc",
              "status": status(None if gdm is None else gdm < 1)})
    for key in ("prodcons", "random2t"):
        rj = S["benchmarks"][key]["values"].get(dp, {}).get("ratio")
        T.append({"target": "%s throughput >= jemalloc" % key,
                  "value": rj,
                  "status": status(None if rj is None else rj >= 1)})
    for q, name in (("p999_ns", "p99.9"), ("p9999_ns", "p99.99")):
        ld, lj = lat.get(dp, {}).get(q), lat.get(REF, {}).get(q)
        T.append({"target": "%s put latency <= jemalloc" % name,
                  "value": ratio_of(ld, lj),
                  "status": status(None if ld is None or lj is None
                                   else ld <= lj)})
    dpp = S.get("direct_pairs")
    if dpp and dpp["ratio"]["best_of_mi_tc"] and dpp["ratio"]["mimalloc"]:
        worst = max(dpp["ratio"]["best_of_mi_tc"]["patterns"])
        T.append({"target": "direct pairs: each pattern faster than "
                            "mimalloc and tcmalloc",
                  "value": worst,
                  "unit": "worst pattern's deferpool/best of the two, "
                          "median over processes",
                  "status": status(worst < 1)})
        gr = dpp["ratio"]["mimalloc"]["geomean"]
        T.append({"target": "direct pairs: geomean <= 0.80x mimalloc",
                  "value": gr, "unit": "median over processes",
                  "status": status(gr <= 0.80)})
    sc = (lat.get(dp) or {}).get("syscalls")
    n = sc["put_thread_total"] if sc and sc["phases"] else None
    T.append({"target": "zero syscalls during puts", "value": n,
              "status": status(None if n is None else n == 0)})
    return S, lat, rss


def r2(x):
    return "-" if x is None else "%.2f" % x


def table_lines(S):
    allocs = S["allocators"]
    L = []
    hdr = ["benchmark", "unit"] + allocs
    L.append("| " + " | ".join(hdr) + " |")
    L.append("|" + "---|" * len(hdr))
    for key, _, label, kind in BENCHES:
        e = S["benchmarks"][key]
        cells = [label, ("ns/pair, lower better" if kind == "time"
                         else "Mops/s, higher better")]
        for a in allocs:
            v = e["values"][a]
            if v["value"] is None:
                cells.append("-")
            else:
                noisy = v["cv"] is not None and v["cv"] > NOISY_CV
                cells.append("%s (%sx)%s" % (fmt(v["value"], kind),
                                             r2(v["ratio"]),
                                             " *" if noisy else ""))
        L.append("| " + " | ".join(cells) + " |")
    cells = ["1T geomean (4 patterns)", "ns/pair, lower better"]
    for a in allocs:
        gg = S["geomean_single_thread"][a]
        cells.append("-" if gg["ns"] is None else
                     "%s (%sx)" % (fmt(gg["ns"], "time"), r2(gg["ratio"])))
    L.append("| " + " | ".join(cells) + " |")

    lat = S["latency"]
    for q, name in (("p50_ns", "put latency p50"), ("p99_ns", "put latency p99"),
                    ("p999_ns", "put latency p99.9"),
                    ("p9999_ns", "put latency p99.99"),
                    ("max_ns", "put latency max")):
        ref = lat.get(REF, {}).get(q)
        cells = [name, "ns, lower better"]
        for a in allocs:
            v = lat.get(a, {}).get(q)
            cells.append("-" if v is None else "%s (%sx)" % (
                fmt(v, "time"), r2(ratio_of(v, ref))))
        L.append("| " + " | ".join(cells) + " |")
    cells = ["syscalls in put phases", "put thread (+ other threads)"]
    for a in allocs:
        sc = lat.get(a, {}).get("syscalls")
        if not sc or not sc["phases"]:
            cells.append("n/a")
        else:
            top = sorted(sc["put_thread"].items(), key=lambda kv: -kv[1])[:2]
            what = ", ".join("%s %d" % kv for kv in top)
            cells.append("%d%s (+%d)" % (sc["put_thread_total"],
                                         " [%s]" % what if what else "",
                                         sc["other_threads_total"]))
    L.append("| " + " | ".join(cells) + " |")

    rss = S["rss"]
    for label, f in (
            ("RSS peak", lambda j: j["peak_kib"] / 1024.0),
            ("RSS after last idle", lambda j: j["cycle"][-1]["idle_end_kib"]
             / 1024.0),
            ("RSS settle time", lambda j: j["cycle"][-1]["settle_ms"])):
        unit = "ms after puts (- never)" if "settle" in label else "MiB"
        cells = [label, unit]
        for a in allocs:
            j = rss.get(a)
            v = f(j) if j else None
            cells.append("-" if v is None else "%.0f" % v)
        L.append("| " + " | ".join(cells) + " |")

    L.append("")
    L.append("Each cell: value, the median of the repetitions (ratio to "
             "jemalloc: for the benchmarks run in rounds, the allocators "
             "one after the other in each, the median over the rounds of "
             "the ratio within the round, which a busy spell of the host "
             "skews less; it can differ from the quotient of the two "
             "medians when such a spell splits the repetitions into a fast "
             "and a slow group).  * = coefficient of "
             "variation over the repetitions above %d%%.  Put latencies "
             "include the timer's own ~%s ns (timer_overhead_ns_p50 in "
             "summary.json)." % (
                 round(NOISY_CV * 100),
                 fmt(lat.get(REF, {}).get("timer_overhead_ns_p50"), "time")))
    dpp = S.get("direct_pairs")
    if dpp:
        names = list(dpp["ns"])
        L.append("")
        L.append("Direct pairs (benchmarks/direct_pairs.c: 64 B get+put, a "
                 "plain C loop of direct calls, all in one process, the "
                 "floor a pointer stack behind the same call, not an "
                 "allocator; "
                 "best of %d rounds%s), ns per pair:" % (
                     dpp["rounds"],
                     "" if dpp.get("processes", 1) == 1 else
                     "; the median over %d processes, of the ns and of "
                     "each process's own ratios" % dpp["processes"]))
        L.append("")
        L.append("| live objects | " + " | ".join(names) +
                 " | dp/mimalloc | dp/tcmalloc |")
        L.append("|---|" + "---|" * (len(names) + 2))
        rt = dpp.get("ratio", {})

        def rcol(a, k):
            r = rt.get(a)
            return r and (r["geomean"] if k is None else r["patterns"][k])
        rows = [(str(p), [dpp["ns"][a][k] for a in names], k)
                for k, p in enumerate(dpp["patterns"])]
        rows.append(("geomean", [dpp["geomean_ns"][a] for a in names],
                     None))
        for label, vals, k in rows:
            L.append("| %s | %s | %s | %s |" % (
                label, " | ".join("%.2f" % x for x in vals),
                r2(rcol("mimalloc", k)), r2(rcol("tcmalloc", k))))
    L.append("")
    L.append("| target (deferpool) | value | status |")
    L.append("|---|---|---|")
    for t in S["targets"]:
        v = t["value"]
        vs = "-" if v is None else (("%.2fx" % v) if isinstance(v, float)
                                    else str(v))
        L.append("| %s | %s | %s |" % (t["target"], vs, t["status"]))
    fl = S.get("floor")
    if fl and fl["geomean_ns"] is not None:
        L.append("")
        L.append("The floor (benchmarks/floor.c: an unbounded thread-local "
                 "pointer stack behind the same calls; not an allocator): "
                 + ", ".join("%s %s ns (%sx)" % (
                     k, fmt(fl["benchmarks"][k]["value"], "time"),
                     r2(fl["benchmarks"][k]["ratio"])) for k in SINGLE)
                 + "; 1T geomean %s ns (%sx jemalloc)." % (
                     fmt(fl["geomean_ns"], "time"), r2(fl["geomean_ratio"])))
    return L


# --------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------

def cdf_points(hist):
    total = sum(c for _, c in hist)
    if not total:
        return [], []
    xs, ys, acc = [], [], 0
    for ns, c in sorted(hist):
        acc += c
        xs.append(max(ns, 1.0))
        ys.append(acc / total)
    return xs, ys


def plot_matplotlib(d, lat, rss, allocs):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for a in allocs:
        if a not in lat or not lat[a]["_hist"]:
            continue
        xs, ys = cdf_points(lat[a]["_hist"])
        ax1.step(xs, ys, where="post", label=a)
        tail = [max(1.0 - y, 1e-9) for y in ys]
        ax2.step(xs, tail, where="post", label=a)
    ax1.set_xscale("log")
    ax1.set_xlabel("put latency (ns, incl. ~timer overhead)")
    ax1.set_ylabel("fraction of puts <= x")
    ax1.set_title("CDF of per-put latency, 64 B, pages emptying")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_ylim(1e-7, 1)
    ax2.set_xlabel("put latency (ns)")
    ax2.set_ylabel("fraction of puts > x")
    ax2.set_title("tail (1 - CDF)")
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(d, "latency_cdf.png"), dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(12, 4.5))
    for a in allocs:
        if a not in rss or not rss[a]["_series"]:
            continue
        s = rss[a]["_series"]
        ax.plot([x[0] for x in s], [x[1] for x in s], label=a)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("RSS (MiB)")
    r0 = next((rss[a] for a in allocs if a in rss), {})
    ax.set_title("RSS over time: %s x (get %s MiB of 64 B objects in %s "
                 "bursts, put all, idle %g s)"
                 % (r0.get("cycles", "?"), r0.get("mib", "?"),
                    r0.get("bursts", "?"), r0.get("idle_ms", 0) / 1000))
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(d, "rss.png"), dpi=110)
    plt.close(fig)
    return True


def plot_gnuplot(d, lat, rss, allocs):
    gp = shutil.which("gnuplot")
    if not gp:
        return False
    cdf_series, rss_series = [], []
    for a in allocs:
        if a in lat and lat[a]["_hist"]:
            p = os.path.join(d, "latency-%s.cdf.dat" % a)
            xs, ys = cdf_points(lat[a]["_hist"])
            with open(p, "w") as f:
                for x, y in zip(xs, ys):
                    f.write("%g %g\n" % (x, y))
            cdf_series.append("'%s' using 1:2 with steps title '%s'" % (p, a))
        if a in rss and rss[a]["_series"]:
            p = os.path.join(d, "rss-%s.dat" % a)
            with open(p, "w") as f:
                for t, m, _ in rss[a]["_series"]:
                    f.write("%g %g\n" % (t, m))
            rss_series.append("'%s' using 1:2 with lines title '%s'" % (p, a))
    script = ["set terminal pngcairo size 1100,450"]
    if cdf_series:
        script += ["set output '%s'" % os.path.join(d, "latency_cdf.png"),
                   "set logscale x", "set grid",
                   "set xlabel 'put latency (ns)'",
                   "set ylabel 'fraction of puts <= x'",
                   "plot " + ", ".join(cdf_series), "unset logscale x"]
    if rss_series:
        script += ["set output '%s'" % os.path.join(d, "rss.png"),
                   "set xlabel 'time (s)'", "set ylabel 'RSS (MiB)'",
                   "plot " + ", ".join(rss_series)]
    subprocess.run([gp], input="\n".join(script) + "\n", text=True,
                   check=False)
    return True


def plot(d, lat, rss, allocs):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if plot_gnuplot(d, lat, rss, allocs):
            return "gnuplot"
        return None
    plot_matplotlib(d, lat, rss, allocs)
    return "matplotlib"


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 2
    d = argv[1]
    quiet = "--quiet" in argv
    S, lat, rss = build(d)
    if not S["allocators"]:
        print("report.py: no results in %s" % d, file=sys.stderr)
        return 1
    S["plots"] = plot(d, lat, rss, S["allocators"])
    lines = table_lines(S)
    with open(os.path.join(d, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(d, "summary.json"), "w") as f:
        json.dump(S, f, indent=1, sort_keys=False)
        f.write("\n")
    if not quiet:
        print("Ratios are to jemalloc in the same run (x1.00).  Times: lower "
              "is better.  Throughputs: higher is better.")
        print("\n".join(lines))
        if S["plots"] is None:
            print("(no plots: neither matplotlib nor gnuplot available)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
