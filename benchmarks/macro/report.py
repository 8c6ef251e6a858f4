"""report.py -- turn the raw runs of run.sh into results.json, table.md
and macro.png.  Usage: report.py OUTDIR (OUTDIR/raw holds the runs).

Every figure is the median of the repetitions.  Time is the program's own
elapsed time for the C workloads (it leaves out start-up and the burst's
idle second) and the wall time from /usr/bin/time for the real programs.
Peak RSS is /usr/bin/time's %M, page faults its %R (minor faults of the
workload process).  Ratios are to jemalloc in the same run; a last table
gives deferpool's ratios to mimalloc.
"""
import glob
import json
import math
import os
import statistics
import sys

ORDER = ["glibc", "jemalloc", "mimalloc", "tcmalloc", "deferpool"]
WORKLOADS = ["larson", "prodcons", "one_to_many", "xthread_random",
             "handover_exit", "threads_churn", "fork", "spawn", "burst",
             "realloc", "realloc_mix", "large", "python", "gcc"]
REAL = {"python", "gcc"}
LAT = ["p50", "p99", "p99.9", "p99.99", "max"]


def parse(out):
    runs = {}
    for tf in glob.glob(os.path.join(out, "raw", "*.time")):
        base = tf[: -len(".time")]
        alloc, wl, rep = os.path.basename(base).split(".")
        lines = [l for l in open(tf).read().splitlines() if l.strip()]
        f = lines[-1].split()
        r = {"wall_s": float(f[0]), "peak_rss_kib": int(f[1]),
             "minflt": int(f[2]) if len(f) > 2 else None,
             "ok": not any(l.startswith("Command") for l in lines)}
        if os.path.exists(base + ".out"):
            for l in open(base + ".out"):
                if l.startswith("MACRO "):
                    k, v = l[6:].strip().split("=", 1)
                    r[k] = v
        if os.path.exists(base + ".md5"):
            r["md5"] = open(base + ".md5").read().strip()
        runs.setdefault(wl, {}).setdefault(alloc, []).append(r)
    return runs


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(runs):
    res = {}
    for wl, per in runs.items():
        ref_md5 = {r.get("md5") for r in per.get("glibc", [])} - {None}
        for alloc, rs in per.items():
            s = {"reps": len(rs), "ok": all(r["ok"] for r in rs)}
            if wl in REAL:
                s["time_s"] = med([r["wall_s"] for r in rs])
                md5s = {r.get("md5") for r in rs}
                # None: glibc was not in this run, nothing to compare with.
                s["output_matches_glibc"] = (md5s == ref_md5) if ref_md5 else None
            else:
                s["time_s"] = med([float(r["elapsed_s"]) for r in rs
                                   if "elapsed_s" in r])
                if any(int(r.get("corrupt", 0)) for r in rs):
                    s["ok"] = False
            s["wall_s"] = med([r["wall_s"] for r in rs])
            s["peak_rss_kib"] = med([r["peak_rss_kib"] for r in rs])
            s["minflt"] = med([r["minflt"] for r in rs])
            if wl == "burst":
                for k in ("rss_base_kib", "rss_after_free_kib", "rss_idle_kib",
                          "rss_end_kib", "idle_ms"):
                    s[k] = med([int(r[k]) for r in rs if k in r])
                # The series of the run whose idle RSS is the median.
                srt = sorted((r for r in rs if "rss_idle_kib" in r),
                             key=lambda r: int(r["rss_idle_kib"]))
                if srt:
                    ser = srt[len(srt) // 2]["rss_series_kib"]
                    s["rss_series_kib"] = [[int(a), int(b)] for a, b in
                                           (x.split(":") for x in ser.split(","))]
            if wl == "larson":
                s["free_samples"] = med([int(r["free_samples"]) for r in rs
                                         if "free_samples" in r])
                for q in LAT:
                    s["free_ns_" + q] = med([int(r["free_ns_" + q]) for r in rs
                                             if "free_ns_" + q in r])
            res.setdefault(wl, {})[alloc] = s
    return res


def ratio(x, ref):
    return x / ref if x is not None and ref else None


def fmt_r(x):
    return "–" if x is None else "%.2f" % x


def main():
    out = sys.argv[1]
    meta = json.load(open(os.path.join(out, "meta.json")))
    res = summarize(parse(out))
    wls = [w for w in WORKLOADS if w in res]
    allocs = [a for a in ORDER if any(a in res[w] for w in wls)]

    # Ratios to jemalloc and geometric means.
    geo = {}
    for a in allocs:
        tr, pr, fr = [], [], []
        for w in wls:
            s, j = res[w].get(a), res[w].get("jemalloc")
            if s is None or j is None:
                continue
            s["time_ratio"] = ratio(s["time_s"], j["time_s"])
            s["peak_rss_ratio"] = ratio(s["peak_rss_kib"], j["peak_rss_kib"])
            s["minflt_ratio"] = ratio(s["minflt"], j["minflt"])
            if w == "burst":
                s["rss_idle_ratio"] = ratio(s["rss_idle_kib"], j["rss_idle_kib"])
            if s["time_ratio"]:
                tr.append(s["time_ratio"])
            if s["peak_rss_ratio"]:
                pr.append(s["peak_rss_ratio"])
            if s["minflt_ratio"]:
                fr.append(s["minflt_ratio"])
        geo[a] = {
            "minflt_ratio": math.exp(sum(map(math.log, fr)) / len(fr)) if fr else None,
            "time_ratio": math.exp(sum(map(math.log, tr)) / len(tr)) if tr else None,
            "peak_rss_ratio": math.exp(sum(map(math.log, pr)) / len(pr)) if pr else None,
        }

    # Targets of issue 4.
    tg = {}
    if "deferpool" in geo and "mimalloc" in geo:
        d, m = geo["deferpool"]["time_ratio"], geo["mimalloc"]["time_ratio"]
        tg["geomean_time_le_mimalloc"] = {"deferpool": d, "mimalloc": m,
                                          "met": d is not None and m is not None and d <= m}
    if "deferpool" in allocs and "jemalloc" in allocs:
        worse = [w for w in wls if "deferpool" in res[w]
                 and (res[w]["deferpool"].get("peak_rss_ratio") or 0) > 1.0]
        tg["peak_rss_le_jemalloc"] = {"workloads_above": worse,
                                      "geomean_ratio": geo["deferpool"]["peak_rss_ratio"],
                                      "met": not worse}
    if "burst" in res and "deferpool" in res["burst"]:
        b = res["burst"]
        d = b["deferpool"]
        tg["rss_after_idle"] = {
            "deferpool_kib": d["rss_idle_kib"],
            "deferpool_above_base_kib": d["rss_idle_kib"] - d["rss_base_kib"],
            "deferpool_end_kib": d["rss_end_kib"],
            "end_ms": d["idle_ms"],
            "all_kib": {a: b[a]["rss_idle_kib"] for a in allocs if a in b},
            "ratio_to_jemalloc": d.get("rss_idle_ratio"),
        }
    if "larson" in res and "deferpool" in res["larson"] and "mimalloc" in res["larson"]:
        d = res["larson"]["deferpool"]["free_ns_p99.99"]
        m = res["larson"]["mimalloc"]["free_ns_p99.99"]
        tg["free_p9999_le_mimalloc"] = {"deferpool_ns": d, "mimalloc_ns": m,
                                        "met": d <= m}

    # Issue 14: deferpool against mimalloc, workload by workload.
    vs_mi = {}
    for w in wls:
        d, m = res[w].get("deferpool"), res[w].get("mimalloc")
        if d is None or m is None:
            continue
        vs_mi[w] = {"time_ratio": ratio(d["time_s"], m["time_s"]),
                    "peak_rss_ratio": ratio(d["peak_rss_kib"], m["peak_rss_kib"]),
                    "minflt_ratio": ratio(d["minflt"], m["minflt"])}
    if vs_mi:
        above = [w for w in vs_mi if (vs_mi[w]["minflt_ratio"] or 0) > 1.5]
        tg["minflt_le_1.5x_mimalloc"] = {"workloads_above": above,
                                         "met": not above}
        slower = [w for w in ("one_to_many", "xthread_random", "handover_exit",
                              "realloc_mix") if w in vs_mi
                  and (vs_mi[w]["time_ratio"] or 0) > 1.0]
        tg["time_le_mimalloc_mt_realloc"] = {"workloads_above": slower,
                                             "met": not slower}
    if "realloc_mix" in res and "deferpool" in res["realloc_mix"] \
            and "jemalloc" in res["realloc_mix"]:
        d = res["realloc_mix"]["deferpool"]
        tg["realloc_mix_peak_rss_le_jemalloc"] = {
            "ratio": d.get("peak_rss_ratio"),
            "met": (d.get("peak_rss_ratio") or 9) <= 1.0}

    json.dump({"meta": meta, "results": res, "geomean": geo,
               "vs_mimalloc": vs_mi, "targets": tg},
              open(os.path.join(out, "results.json"), "w"), indent=1)

    # table.md
    L = []
    lr = meta.get("larson_reps", meta["reps"])
    sx = meta.get("slow_x")
    L.append("Median of %d runs%s%s; ratio to jemalloc in the same run "
             "(lower is better). Time: the program's own elapsed time "
             "(wall time for python and gcc)." % (
                 meta["reps"], "" if lr == meta["reps"]
                 else " (larson: %d)" % lr,
                 "" if not sx or meta["reps"] < 2 else
                 "; one run for an allocator more than %gx the fastest "
                 "one's time in the first" % sx))
    L.append("")
    hdr = "| workload | " + " | ".join(allocs) + " |"
    sep = "|---|" + "---|" * len(allocs)

    def cell(w, a, key, rkey, unit):
        s = res[w].get(a)
        if s is None or s.get(key) is None:
            return "–"
        bad = ("" if s["ok"] and s.get("output_matches_glibc") is not False
               else " **FAIL**")
        v = s[key]
        txt = ("%.3f s" % v if unit == "s" else "%.0f MiB" % (v / 1024)
               if unit == "k" else "%.0f" % v)
        return "%s (%s)%s" % (txt, fmt_r(s.get(rkey)), bad)

    L.append("**Time**")
    L.append("")
    L += [hdr, sep]
    for w in wls:
        L.append("| %s | " % w + " | ".join(cell(w, a, "time_s", "time_ratio", "s")
                                          for a in allocs) + " |")
    L.append("| **geomean time ratio** | " + " | ".join(
        "**%s**" % fmt_r(geo[a]["time_ratio"]) for a in allocs) + " |")
    L.append("")
    L.append("**Peak RSS** (`/usr/bin/time %M`)")
    L.append("")
    L += [hdr, sep]
    for w in wls:
        L.append("| %s | " % w + " | ".join(
            cell(w, a, "peak_rss_kib", "peak_rss_ratio", "k") for a in allocs) + " |")
    L.append("| **geomean peak-RSS ratio** | " + " | ".join(
        "**%s**" % fmt_r(geo[a]["peak_rss_ratio"]) for a in allocs) + " |")
    L.append("")
    L.append("**Minor page faults** (`/usr/bin/time %R`)")
    L.append("")
    L += [hdr, sep]
    for w in wls:
        L.append("| %s | " % w + " | ".join(
            cell(w, a, "minflt", "minflt_ratio", "n") for a in allocs) + " |")
    L.append("| **geomean fault ratio** | " + " | ".join(
        "**%s**" % fmt_r(geo[a]["minflt_ratio"]) for a in allocs) + " |")
    L.append("")
    if vs_mi:
        L.append("**deferpool / mimalloc** (issue 14's targets: time <= 1, "
                 "faults <= 1.5)")
        L.append("")
        L += ["| workload | time | peak RSS | faults |", "|---|---|---|---|"]
        for w in vs_mi:
            v = vs_mi[w]
            L.append("| %s | %s | %s | %s |" % (
                w, fmt_r(v["time_ratio"]), fmt_r(v["peak_rss_ratio"]),
                fmt_r(v["minflt_ratio"])))
        L.append("")
    if "burst" in res:
        b = res["burst"]
        L.append("**RSS of the burst workload** (3 × ~512 MiB allocated and "
                 "freed; VmRSS)")
        L.append("")
        L += ["| | " + " | ".join(allocs) + " |", sep]
        for key, name in (("rss_base_kib", "before the burst"),
                          ("rss_after_free_kib", "just after the last free()"),
                          ("rss_idle_kib", "**1000 ms after it** (headline)"),
                          ("rss_end_kib", "%d ms after it" % meta["idle_ms"])):
            L.append("| %s | " % name + " | ".join(
                "%.1f MiB" % (b[a][key] / 1024) if a in b else "–"
                for a in allocs) + " |")
        L.append("| idle RSS, ratio to jemalloc | " + " | ".join(
            fmt_r(b[a].get("rss_idle_ratio")) if a in b else "–"
            for a in allocs) + " |")
        L.append("")
    if "larson" in res:
        l = res["larson"]
        n = {a: l[a]["reps"] for a in allocs if a in l}
        most = max(n.values()) if n else 0
        fewer = ", ".join("%s: %d" % (a, k) for a, k in n.items()
                          if k != most)
        any_a = next(iter(n), None)
        L.append("**free() latency under the larson churn** (every 16th "
                 "free timed, both threads, ns; %s samples per run; median "
                 "of %d runs%s)"
                 % (l[any_a]["free_samples"] if any_a else "?", most,
                    " (%s)" % fewer if fewer else ""))
        L.append("")
        L += ["| | " + " | ".join(allocs) + " |", sep]
        for q in LAT:
            L.append("| %s | " % q + " | ".join(
                "%d" % l[a]["free_ns_" + q] if a in l else "–" for a in allocs) + " |")
        L.append("")
    bad = [(w, a) for w in wls for a in res[w]
           if not res[w][a]["ok"] or res[w][a].get("output_matches_glibc") is False]
    if bad:
        L.append("**Failed runs:** " + ", ".join("%s/%s" % x for x in bad))
        L.append("")
    open(os.path.join(out, "table.md"), "w").write("\n".join(L))
    print("\n".join(L))

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report.py: no matplotlib, no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(1, 4, figsize=(22, 4.8))
    width = 0.8 / len(allocs)
    for k, (key, title) in enumerate((("time_ratio", "time / jemalloc"),
                                      ("peak_rss_ratio", "peak RSS / jemalloc"),
                                      ("minflt_ratio", "page faults / jemalloc"))):
        for i, a in enumerate(allocs):
            ys = [res[w].get(a, {}).get(key) or 0 for w in wls]
            ax[k].bar([x + i * width for x in range(len(wls))], ys, width, label=a)
        ax[k].set_xticks([x + width * (len(allocs) - 1) / 2 for x in range(len(wls))])
        ax[k].set_xticklabels(wls, rotation=20)
        ax[k].axhline(1.0, color="grey", lw=0.8)
        ax[k].set_yscale("log")
        ax[k].set_title(title + " (log scale)")
    ax[0].legend(fontsize=8)
    if "burst" in res:
        for a in allocs:
            s = res["burst"].get(a)
            if s and "rss_series_kib" in s:
                ser = s["rss_series_kib"]
                ax[3].plot([t for t, _ in ser], [v / 1024 for _, v in ser],
                           marker="o", label=a)
        ax[3].axvline(1000, color="grey", lw=0.8, ls="--")
        ax[3].set_xlabel("ms after the last free() (dashed: the 1 s reading)")
        ax[3].set_ylabel("VmRSS (MiB)")
        ax[3].set_ylim(bottom=0)
        ax[3].set_title("burst: RSS while idle")
        ax[3].legend(fontsize=8)
    fig.suptitle("deferpool macro benchmarks, %s, %s, %d CPUs" %
                 (meta["date_utc"][:10], meta["cpu"], meta["nproc"]))
    fig.tight_layout()
    fig.savefig(os.path.join(out, "macro.png"), dpi=90)


if __name__ == "__main__":
    main()
