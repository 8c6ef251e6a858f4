#!/usr/bin/env python3
"""test_stats_print.py STATS_PROG TUNING_MD -- the pool statistics printer.

STATS_PROG (stats_prog.c) uses only pools and prints each pool's
dp_pool_stats() counters on stdout; with DEFERPOOL_CONF=stats_print:json
libdeferpool prints every live pool at exit.  The output is parsed with
Python's json module and every number is compared with the counters.
Also: dp_stats_print() called directly (JSON and text), stats_print:1,
stats_print off, a bad value, and DEFERPOOL_CONF=help against the option
table of docs/tuning.md.  Exit 0 when everything holds, 1 otherwise."""
import json
import os
import re
import subprocess
import sys

prog, tuning_md = sys.argv[1], sys.argv[2]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr)


def run(conf, *args):
    env = dict(os.environ)
    env.pop("DEFERPOOL_CONF", None)
    if conf is not None:
        env["DEFERPOOL_CONF"] = conf
    # The program exits with its pools live, on purpose.
    env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
    p = subprocess.Popen([prog, *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    out, err = p.communicate(timeout=300)
    check(p.returncode == 0, f"{conf} {args}: exit status {p.returncode}: "
          f"{err.decode(errors='replace')}")
    return p.pid, out.decode(), err.decode()


def counters(out):
    """{name: {field: int}} from the program's own 'pool' lines."""
    pools = {}
    for line in out.splitlines():
        if not re.match(r"pool [0-9a-f]+ objsize=", line):
            continue
        words = line.split()
        name = bytes.fromhex(words[1]).decode()
        pools[name] = {k: int(v) for k, v in (w.split("=") for w in words[2:])}
    return pools


def check_json(doc, pid, want, label):
    top = doc.get("deferpool")
    check(isinstance(top, dict), f"{label}: no 'deferpool' object")
    if not isinstance(top, dict):
        return
    check(top.get("pid") == pid, f"{label}: pid {top.get('pid')} != {pid}")
    check(os.path.basename(top.get("program", "")) ==
          os.path.basename(prog), f"{label}: program {top.get('program')!r}")
    check(isinstance(top.get("version"), str) and
          re.fullmatch(r"\d+\.\d+\.\d+", top["version"]) is not None,
          f"{label}: version {top.get('version')!r}")
    r = top.get("reclaim", {})
    check(r.get("running") is False, f"{label}: reclaim thread {r}")
    for k in ("passes", "pages_returned", "pages_filled", "interval_ns"):
        check(isinstance(r.get(k), int), f"{label}: reclaim.{k} {r.get(k)!r}")
    got = {p["name"]: p for p in top.get("pools", [])}
    check(set(got) == set(want),
          f"{label}: pools {sorted(got)} != {sorted(want)}")
    for name, fields in want.items():
        pool = got.get(name, {})
        for k, v in fields.items():
            check(pool.get(k) == v,
                  f"{label}: pool {name!r} {k} = {pool.get(k)!r}, "
                  f"dp_pool_stats says {v}")
        if pool:
            check(pool["pages_partial"] + pool["pages_full"] +
                  pool["pages_empty"] + pool["pages_pending"] == pool["pages"],
                  f"{label}: pool {name!r} pages by state do not add up")
    check(got.get("gamma", {}).get("provider") == "mock",
          f"{label}: gamma's provider {got.get('gamma', {}).get('provider')!r}")
    check(got.get("alpha", {}).get("provider") == "mmap",
          f"{label}: alpha's provider {got.get('alpha', {}).get('provider')!r}")


# 1. At exit, JSON, for a program that uses only pools.
pid, out, err = run("stats_print:json,background_thread:0")
want = counters(out)
check(set(want) == {"alpha", 'be "ta"\\\t', "gamma"},
      f"the program printed pools {sorted(want)}")
try:
    check_json(json.loads(err), pid, want, "stats_print:json at exit")
except json.JSONDecodeError as e:
    check(False, f"stats_print:json at exit is not JSON ({e}): {err!r}")

# 2. dp_stats_print() called by the program, JSON then text.
pid, out, err = run("background_thread:0", "api")
want = counters(out)
m = re.search(r"^--json--\n(.*?)^--text--\n(.*)\Z", out, re.S | re.M)
check(m is not None, f"api: markers missing in {out!r}")
if m:
    try:
        check_json(json.loads(m.group(1)), pid, want, "dp_stats_print json")
    except json.JSONDecodeError as e:
        check(False, f"dp_stats_print json is not JSON ({e})")
    text = m.group(2).splitlines()
    check(len(text) == 5, f"text: {len(text)} lines, expected 5: {text}")
    check(f"pid {pid}," in text[0] and "3 pools" in text[0],
          f"text header: {text[0]!r}")
    rows = {line.split()[0]: line.split() for line in text[2:]}
    head = text[1].split()
    for name, show in (("alpha", "alpha"), ("gamma", "gamma"),
                       ('be "ta"\\\t', 'be_"ta"\\_')):
        row = rows.get(show)
        check(row is not None, f"text: no row for {show!r}")
        if row:
            for col, field in (("inuse", "objs_inuse"), ("gets", "gets"),
                               ("pages", "pages"), ("empty", "pages_empty"),
                               ("puts", "puts"), ("cached", "objs_cached")):
                check(int(row[head.index(col)]) == want[name][field],
                      f"text: {show} {col} {row[head.index(col)]} != "
                      f"{want[name][field]}")
check(err == "", f"api without stats_print printed on stderr: {err!r}")

# 3. stats_print:1 prints the text form at exit.
pid, out, err = run("stats_print:1,background_thread:0")
lines = err.splitlines()
check(len(lines) == 5 and lines[0].startswith("deferpool ") and
      f"pid {pid}," in lines[0], f"stats_print:1 printed {err!r}")

# 4. Off, by default and explicitly; a bad value warns and stays off.
for conf in (None, "stats_print:0,background_thread:0"):
    _, _, err = run(conf)
    check(err == "", f"DEFERPOOL_CONF={conf} printed {err!r}")
_, _, err = run("stats_print:xml,background_thread:0")
check(err.startswith("deferpool: DEFERPOOL_CONF: bad stats_print value")
      and len(err.splitlines()) == 1, f"stats_print:xml printed {err!r}")

# 5. help lists exactly the options of docs/tuning.md's table.
_, _, err = run("help,background_thread:0")
listed = [line.split()[0] for line in err.splitlines()[1:]]
with open(tuning_md) as f:
    options = re.search(r"^## Options.*?(?=^## )", f.read(), re.M | re.S)
documented = re.findall(r"^\| `([a-z_]+)` \|", options.group(0) if options
                        else "", re.M)
check(listed == documented,
      f"help lists {listed}, docs/tuning.md documents {documented}")
check(err.splitlines()[0].startswith("deferpool ") if err else False,
      f"help printed {err!r}")
check("now 0" in err.splitlines()[1] if len(err.splitlines()) > 1 else False,
      f"help does not show background_thread:0 in effect: {err!r}")

print(f"test_stats_print: {len(failures)} failures")
sys.exit(1 if failures else 0)
