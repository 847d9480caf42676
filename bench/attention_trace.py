# Reads the timeline that a diagnostics build of the Hopper attention prints (-DSVOO_ATTN_TRACE; see
# docs/cuda-backend.md) and shows, per item of block 0, when each key (K) and value (V) tile's copies
# were issued and when consumer 0 got past its wait for them, the producer's preparation of the next
# item, and consumer 0's epilogue, in SM clocks; then the clocks an item and the preparation's span.
#   python3 bench/attention_trace.py TRACE.txt [TILES_PER_ITEM] [FIRST_ITEM] [ITEMS]
import collections, statistics, sys

try:
    path = sys.argv[1]
    tiles, first, count = (int(a) for a in (sys.argv[2:] + ['4', '4', '2'][len(sys.argv) - 2:])[:3])
    lines = open(path).read().splitlines()
except (IndexError, ValueError, OSError) as e:
    sys.exit(f'usage: attention_trace.py TRACE.txt [TILES_PER_ITEM FIRST_ITEM ITEMS] (whole numbers): {e}')
ev = collections.defaultdict(dict)
for line in lines:
    p = line.split()
    if len(p) == 3 and p[1].isdigit() and p[2].lstrip('-').isdigit():
        ev[p[0]][int(p[1])] = int(p[2])
if not ev['item0']:
    sys.exit(f'{path}: no timeline in it (a diagnostics build prints lines "event index clock")')
for li in range(first, first + count):
    print(f"item {li}: start {ev['item0'].get(li, 0)}, next item's preparation {ev['prep0'].get(li + 1, 0)}-{ev['prep1'].get(li + 1, 0)}")
    for t in range(tiles):
        g = li * tiles + t
        print(f"  tile {t}: K issued {ev['kissue'].get(g, 0):9d}, waited {ev['kwait0'].get(g, 0):9d} | "
              f"V issued {ev['vissue'].get(g, 0):9d}, waited {ev['vwait0'].get(g, 0):9d}")
    print(f"  epilogue {ev['epi0_0'].get(li, 0)}-{ev['epi1_0'].get(li, 0)}")
starts = [ev['item0'][i] for i in sorted(ev['item0'])]
gaps = [b - a for a, b in zip(starts, starts[1:])][2:-2]
prep = [ev['prep1'][i] - ev['prep0'][i] for i in ev['prep0'] if i in ev['prep1'] and i > 2][:-2]
if gaps:
    print(f"clocks an item (median of {len(gaps)}): {statistics.median(gaps):.0f}")
if prep:
    print(f"preparation's span, first piece to last (median of {len(prep)}): {statistics.median(prep):.0f}")
