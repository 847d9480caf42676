# Reads the timeline that a diagnostics build of the Hopper attention prints (-DSVOO_ATTN_TRACE; see
# docs/cuda-backend.md), in SM clocks of block 0.
#   python3 bench/attention_trace.py TRACE.txt [TILES_PER_ITEM] [FIRST_ITEM] [ITEMS]
#     (a --uniform layout, whose items all have TILES_PER_ITEM tiles): per item, when each key (K) and
#     value (V) tile's copies were issued and when consumer 0 got past its wait for them, the
#     producer's preparation of the next item, and consumer 0's epilogue; then the clocks an item and
#     the preparation's span.
#   python3 bench/attention_trace.py TRACE.txt --blocks
#     every block's span (global timer, ns), key tiles and items: the call, how long the blocks that
#     finished first sat idle at its end (the grid's tail), the spread of tiles a block, ns a tile.
#   python3 bench/attention_trace.py TRACE.txt --items
#     (any layout, e.g. --profile-density's real ones): consumer 0's items with their tiles (those it
#     waited for between the item's start and the next's), whether consumer 1 sat it out (an item of
#     at most 64 rows), the clocks a tile in the item's steady state and what the item cost beyond
#     that, its epilogue; then where the block's time went.
import collections, statistics, sys


def read(path):
    ev = collections.defaultdict(dict)
    for line in open(path).read().splitlines():
        p = line.split()
        if len(p) == 3 and p[1].isdigit() and p[2].lstrip('-').isdigit():
            ev[p[0]][int(p[1])] = int(p[2])
    if not ev['item0']:
        sys.exit(f'{path}: no timeline in it (a diagnostics build prints lines "event index clock")')
    return ev


def uniform(ev, tiles, first, count):
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


def items(ev):
    kw = ev['kwait0']
    order = sorted(ev['item0'])
    rows = []
    for li, nxt in zip(order, order[1:]):
        s, e = ev['item0'][li], ev['item0'][nxt]
        ts = sorted(t for t in kw if s <= kw[t] < e)
        if len(ts) < 2 or li not in ev['epi0_0'] or li not in ev['epi1_0']:
            continue
        steady = (kw[ts[-1]] - kw[ts[0]]) / (len(ts) - 1)
        rows.append((li, len(ts), li not in ev['item1'], e - s, steady, e - s - len(ts) * steady,
                     ev['epi1_0'][li] - ev['epi0_0'][li]))
    print(' item  tiles  solo   clocks  a tile (steady)  beyond the tiles  epilogue')
    for li, n, solo, d, st, over, epi in rows:
        print(f'{li:5d} {n:6d} {"yes" if solo else "":>5s} {d:8d} {st:16.0f} {over:17.0f} {epi:9d}')
    if not rows:
        return
    total = sum(r[3] for r in rows)
    tiles = sum(r[1] for r in rows)
    solo = [r for r in rows if r[2]]
    pair = [r for r in rows if not r[2]]
    print(f'{len(rows)} items, {tiles} tiles, {total} clocks ({total / tiles:.0f} a tile)')
    if pair:
        long_ = [r[4] for r in pair if r[1] >= 16]
        print(f'  two-consumer items: a tile {statistics.median(long_) if long_ else float("nan"):.0f} clocks (median over items of '
              f'16 tiles or more), beyond the tiles {statistics.median(r[5] for r in pair):.0f} an item (median), '
              f'{sum(r[5] for r in pair) / total:.1%} of the time in all; epilogue {statistics.median(r[6] for r in pair):.0f}')
    if solo:
        print(f'  items of at most 64 rows (one consumer): {len(solo)} of {len(rows)}, {sum(r[1] for r in solo)} tiles, '
              f'{sum(r[3] for r in solo) / total:.1%} of the time; a tile {statistics.median(r[4] for r in solo):.0f} clocks')


def blocks(path):
    rows = [[int(x) for x in line.split()[1:]] for line in open(path).read().splitlines() if line.startswith('block ')]
    if not rows:
        sys.exit(f'{path}: no "block" lines in it (a diagnostics build prints them)')
    start = [r[1] for r in rows]
    end = [r[2] for r in rows]
    tiles = [r[3] for r in rows]
    call = max(end) - min(start)
    busy = sum(e - s for s, e in zip(start, end))
    print(f'{len(rows)} blocks, call {call / 1e3:.1f} us; blocks end at {min(end) / 1e3:.1f} (first) / '
          f'{statistics.median(end) / 1e3:.1f} (median) / {max(end) / 1e3:.1f} us; idle at the end {1 - busy / (len(rows) * call):.1%} '
          f'of the blocks\' time')
    print(f'key tiles a block {min(tiles)} / {statistics.median(tiles):.0f} / {max(tiles)} (min / median / max), '
          f'{sum(tiles)} in all, {sum(r[4] for r in rows)} items; '
          f'{statistics.median((e - s) / t for s, e, t in zip(start, end, tiles) if t):.0f} ns a tile (median)')


if __name__ == '__main__':
    try:
        path = sys.argv[1]
        if sys.argv[2:3] in (['--items'], ['--blocks']):
            if len(sys.argv) > 3:
                raise ValueError(f'{sys.argv[2]} takes no more arguments')
            items(read(path)) if sys.argv[2] == '--items' else blocks(path)
        else:
            tiles, first, count = (int(a) for a in (sys.argv[2:] + ['4', '4', '2'][len(sys.argv) - 2:])[:3])
            uniform(read(path), tiles, first, count)
    except (IndexError, ValueError, OSError) as e:
        sys.exit(f'usage: attention_trace.py TRACE.txt [TILES_PER_ITEM FIRST_ITEM ITEMS] (whole numbers) | TRACE.txt --items | TRACE.txt --blocks: {e}')
