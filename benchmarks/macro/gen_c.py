# gen_c.py -- write a deterministic C file for the gcc workload: many
# small functions with loops, switches and struct copies, enough to keep
# cc1 -O2 busy for about a second.
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
out = ["#include <stdio.h>", "struct s { int a[8]; double d; };"]
for i in range(n):
    out.append(
        f"""static int f{i}(int x, struct s *p)
{{
    int r = {i};
    for (int j = 0; j < (x & 15); j++) {{
        switch ((x + j) % 5) {{
        case 0: r += p->a[j & 7] * {i % 13 + 1}; break;
        case 1: r ^= (int)(p->d * {i % 7 + 1}) + j; break;
        case 2: {{ struct s q = *p; q.a[j & 7] += r; r += q.a[(j + 3) & 7]; }} break;
        case 3: r = (r << 3) - r + {i}; break;
        default: r -= x / (j + 1);
        }}
    }}
    return r;
}}"""
    )
out.append("int main(void)\n{\n    struct s p = {{1,2,3,4,5,6,7,8}, 0.5};\n    long t = 0;")
for i in range(n):
    out.append(f"    t += f{i}({i}, &p);")
out.append('    printf("%ld\\n", t);\n    return 0;\n}')
print("\n".join(out))
