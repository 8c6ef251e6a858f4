# pywork.py -- the "real program" workload for Python, run as
#   PYTHONMALLOC=malloc PYTHONHASHSEED=0 python3 pywork.py [scale]
# so that every object allocation goes to the preloaded malloc.  It builds
# and drops dicts, lists, strings, tuples and JSON text in rounds, and
# prints a digest that must be the same under every allocator.
import hashlib
import json
import sys

scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
n = int(36000 * scale)
h = hashlib.sha256()
for rnd in range(4):
    d = {}
    for i in range(n):
        k = "key-%d-%d" % (rnd, i * 7919 % n)
        d[k] = (i, str(i * i), [i] * (i % 5))
    items = sorted(d.items(), key=lambda kv: kv[1][1])
    text = json.dumps(items[: n // 4])
    back = json.loads(text)
    words = " ".join(k for k, _ in items[::3]).split()
    words.sort(key=len)
    h.update(text[:: 97].encode())
    h.update(("%d %d %d" % (len(back), len(words), sum(len(w) for w in words))).encode())
    del d, items, text, back, words
print(h.hexdigest())
