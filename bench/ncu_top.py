# Top SASS instructions of an Nsight Compute source-page CSV by stall samples (address, opcode,
# samples, top stall reasons), and the totals by reason.  python3 bench/ncu_top.py FILE.csv [N]
import collections, os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ncu_csv import column, number, source_page
path = sys.argv[1]; n = int(sys.argv[2]) if len(sys.argv) > 2 else 40
h, data = source_page(path)
src = column(h, lambda c: c == 'Source'); addr = column(h, lambda c: c == 'Address')
st = column(h, lambda c: c.startswith('Warp Stall Sampling (All'))
ex = column(h, lambda c: c.startswith('Instructions Executed'))
reasons = [(i, c) for i, c in enumerate(h) if c.startswith('stall_')]
items = []; tot = collections.Counter()
for r in data:
    if len(r) <= max(src, st or 0): continue
    s = number(r[st]) if st is not None else 0
    rs = sorted(((number(r[i]), c) for i, c in reasons), reverse=True)[:3]
    for i, c in reasons: tot[c] += number(r[i])
    items.append((s, r[addr] if addr is not None else '', r[src].strip()[:70], number(r[ex]) if ex is not None else 0, rs))
T = sum(x[0] for x in items) or 1
print(f'# stall samples {T:.0f}; by reason: ' + ', '.join(f'{c} {v / T * 100:.1f}%' for c, v in tot.most_common(10)))
for s, a, text, e, rs in sorted(items, reverse=True)[:n]:
    print(f'{a:>8} {s / T * 100:5.1f}% exec {e:10.0f}  {text:70s} ' + ', '.join(f'{c[6:]} {v / T * 100:.1f}' for v, c in rs if v > 0))
