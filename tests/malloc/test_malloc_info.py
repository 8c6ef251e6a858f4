#!/usr/bin/env python3
"""test_malloc_info.py PROG -- malloc_info() writes deferpool's own XML.

PROG (malloc_info_prog.c, linked with -ldeferpool-malloc) writes
malloc_info(0, stderr) and then its dp_malloc_stats_get() numbers on
stdout.  The XML is parsed with xml.etree and every number compared.
glibc's own malloc_info describes empty arenas: it fails here."""
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

env = dict(os.environ, DEFERPOOL_CONF="background_thread:0")
p = subprocess.Popen([sys.argv[1]], stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, env=env)
p.stdout_data, p.stderr_data = p.communicate(timeout=120)
fails = []


def check(cond, what):
    if not cond:
        fails.append(what)
        print("FAIL:", what, file=sys.stderr)


check(p.returncode == 0, f"exit status {p.returncode}")
want = dict(line.split("=") for line in p.stdout_data.decode().split())
want = {k: int(v) for k, v in want.items()}
try:
    root = ET.fromstring(p.stderr_data)
except ET.ParseError as e:
    check(False, f"not XML ({e}): {p.stderr_data[:300]!r}")
    sys.exit(1)
check(root.tag == "malloc" and root.get("allocator") == "deferpool-malloc",
      f"root <{root.tag} {root.attrib}>")
check(root.get("pid") == str(p.pid), f"pid {root.get('pid')} != {p.pid}")
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
print(f"test_malloc_info: {len(fails)} failures")
sys.exit(1 if fails else 0)
