#!/usr/bin/env python3
"""test_malloc_observe.py PROG LIB -- what the drop-in malloc shows of itself.

PROG (malloc_info_prog.c, linked with -ldeferpool-malloc) writes
malloc_info(0, stderr) and then its dp_malloc_stats_get() numbers on
stdout; with DEFERPOOL_CONF=stats_print:json the library adds its JSON
statistics on stderr at exit.
  1. malloc_info is deferpool's own XML (parsed with xml.etree; glibc's
     describes empty arenas), and its numbers are dp_malloc_stats_get's;
  2. the JSON printed at exit parses (json module), names the pid and
     program, and its numbers are the program's;
  3. a program that never calls malloc (/bin/true under LD_PRELOAD=LIB)
     prints its statistics at exit too, as JSON and as text."""
import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

prog, lib = sys.argv[1], sys.argv[2]
fails = []


def check(cond, what):
    if not cond:
        fails.append(what)
        print("FAIL:", what, file=sys.stderr)


def run(argv, conf, preload=None):
    env = dict(os.environ, DEFERPOOL_CONF=conf)
    env.pop("LD_PRELOAD", None)
    if preload:
        env["LD_PRELOAD"] = preload
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env)
    out, err = p.communicate(timeout=120)
    check(p.returncode == 0, f"{argv}: exit status {p.returncode}")
    return p.pid, out.decode(), err.decode()


# ---- 1 and 2: malloc_info, then the JSON at exit --------------------------
pid, out, err = run([prog], "background_thread:0,stats_print:json")
want = {k: int(v) for k, v in (w.split("=") for w in out.split())}
xml_text, _, json_text = err.partition("</malloc>\n")
try:
    root = ET.fromstring(xml_text + "</malloc>\n")
except ET.ParseError as e:
    check(False, f"malloc_info is not XML ({e}): {err[:300]!r}")
    sys.exit(1)
check(root.tag == "malloc" and root.get("allocator") == "deferpool-malloc",
      f"root <{root.tag} {root.attrib}>")
check(root.get("pid") == str(pid), f"pid {root.get('pid')} != {pid}")
small, large = root.find("small"), root.find("large")
check(small is not None and large is not None, "no <small> or <large>")
if small is not None and large is not None:
    for attr, key in (("max", "small_max"), ("classes", "small_classes"),
                      ("inuse", "small_objs_inuse"),
                      ("bytes-inuse", "small_bytes_inuse"),
                      ("cached", "small_objs_cached"),
                      ("pages", "small_pages"),
                      ("pages-empty", "small_pages_empty"),
                      ("bytes-mapped", "small_bytes_mapped"),
                      ("put-provider-calls", "put_provider_calls")):
        check(int(small.get(attr, -1)) == want[key],
              f"small {attr}={small.get(attr)} != {key}={want[key]}")
    for attr, key in (("inuse", "large_inuse"),
                      ("bytes-inuse", "large_bytes_inuse"),
                      ("cached", "large_cached"), ("maps", "large_maps")):
        check(int(large.get(attr, -1)) == want[key],
              f"large {attr}={large.get(attr)} != {key}={want[key]}")
    sizes = small.findall("sizes/size")
    check(len(sizes) >= 2, f"{len(sizes)} <size> elements")
    check(sum(int(s.get("inuse")) for s in sizes) == want["small_objs_inuse"],
          "the classes' inuse do not add up to small inuse")
    check(sum(int(s.get("inuse")) * int(s.get("class")) for s in sizes) ==
          want["small_bytes_inuse"], "class bytes do not add up")
    check(want["small_objs_inuse"] >= 666 and want["large_inuse"] == 3,
          f"the program's own blocks are not counted: {want}")

try:
    doc = json.loads(json_text)
except json.JSONDecodeError as e:
    check(False, f"stats_print:json at exit is not JSON ({e}): {json_text!r}")
    doc = {}
check(doc.get("allocator") == "deferpool-malloc" and doc.get("pid") == pid
      and os.path.basename(doc.get("program", "")) == os.path.basename(prog),
      f"JSON header {[doc.get(k) for k in ('allocator', 'pid', 'program')]}")
js, jl = doc.get("small", {}), doc.get("large", {})
# Nothing is allocated or freed between the program's snapshot and exit
# but what stdio and exit do: the program's blocks are all still there.
check(js.get("objs_inuse", -1) >= want["small_objs_inuse"] and
      jl.get("inuse") == want["large_inuse"] and
      jl.get("maps") == want["large_maps"] and
      js.get("put_provider_calls") == 0,
      f"JSON at exit {js} {jl} against the program's {want}")
classes = doc.get("classes", [])
check(sum(c["objs_inuse"] for c in classes) == js.get("objs_inuse"),
      "JSON classes do not add up to small.objs_inuse")

# ---- 3: a program that never mallocs ---------------------------------------
true = "/bin/true" if os.path.exists("/bin/true") else "/usr/bin/true"
pid, _, err = run([true], "stats_print:json", preload=lib)
try:
    doc = json.loads(err)
    check(doc.get("pid") == pid and doc.get("allocator") == "deferpool-malloc",
          f"true: {err[:200]!r}")
except json.JSONDecodeError as e:
    check(False, f"true with stats_print:json printed no JSON ({e}): {err!r}")
pid, _, err = run([true], "stats_print:1", preload=lib)
check(re.match(rf"deferpool-malloc \S+ statistics: pid {pid}, program ", err)
      is not None, f"true with stats_print:1 printed {err[:200]!r}")

print(f"test_malloc_observe: {len(fails)} failures")
sys.exit(1 if fails else 0)
