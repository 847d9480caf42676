# Summarises an Nsight Compute source-page CSV (ncu -i REP --page source --csv --print-source sass):
# stall samples and executed instructions by SASS opcode.  python3 bench/ncu_summary.py FILE.csv TITLE
import collections, os, re, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ncu_csv import column, number, source_page
path, title = sys.argv[1], sys.argv[2]
h, data = source_page(path)
src = column(h, lambda c: c == 'Source')
ex = column(h, lambda c: c.startswith('Instructions Executed'))
st = column(h, lambda c: c.startswith('Warp Stall Sampling (All'))
reasons = [(i, c) for i, c in enumerate(h) if c.startswith('stall_') or c.startswith('Stall ')]
S = collections.Counter(); E = collections.Counter(); R = collections.Counter()
for r in data:
    if len(r) <= max(src, ex or 0, st or 0): continue
    m = re.match(r'\s*(@!?U?P\w+\s+)?([A-Z0-9_]+)', r[src])
    if not m: continue
    op = m.group(2)
    if st is not None: S[op] += number(r[st])
    if ex is not None: E[op] += number(r[ex])
    for i, c in reasons: R[c] += number(r[i])
ts, te = sum(S.values()) or 1, sum(E.values()) or 1
print(f'# {title}: warp instructions executed {te:.0f}, stall samples {ts:.0f}')
if R:
    tr = sum(R.values()) or 1
    print('# stall reasons: ' + ', '.join(f'{c} {v/tr*100:.1f}%' for c, v in R.most_common(12)))
print('# opcode   share of stall samples   share of executed')
for op, v in S.most_common(25):
    print(f'{op:10s} {v/ts*100:6.1f}% {E[op]/te*100:6.1f}%')
