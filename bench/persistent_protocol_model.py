# Host model of the persistent Hopper attention kernel's synchronisation
# (src/cuda/attention_hopper.cu): the producer warpgroup and the two consumers as coroutines, the
# mbarriers with their phase parity, the named barriers, and every buffer (key and value stages,
# Q buffers, item info) tagged with the item and tile written into it. Random item lists (one- and
# two-consumer items, 0 to 5 key tiles) run under random interleavings; each read checks that it
# sees the data meant for it, and a run that stops making progress is a deadlock.
#   python3 bench/persistent_protocol_model.py [RUNS] [--same-turn-barriers]
# --same-turn-barriers models the turn-taking on one pair of named barriers for every item, which
# deadlocks: consumer 1 can give the next item's first turn before consumer 0 has absorbed the
# last turn of the current one. The kernel alternates the pair with the item's parity.
# A model of the protocol, not of the code: change it with the kernel.
import random
import sys


class MBarrier:
    """Completes a phase after `expected` arrivals; try_wait.parity(p) passes once the phase of
    parity p has completed, i.e. while the current phase's parity differs from p."""

    def __init__(self, expected):
        self.expected, self.arrived, self.phase = expected, 0, 0

    def arrive(self, count=1):
        self.arrived += count
        assert self.arrived <= self.expected, "more arrivals than a phase expects"
        if self.arrived == self.expected:
            self.phase, self.arrived = self.phase + 1, 0

    def passed(self, parity):
        return (self.phase & 1) != parity


class NamedBarrier:
    def __init__(self, expected):
        self.expected, self.arrived, self.generation = expected, 0, 0

    def arrive(self):
        self.arrived += 1
        if self.arrived == self.expected:
            self.generation, self.arrived = self.generation + 1, 0


def run(items, seed, pingpong=True, alternate_turns=True):
    rnd = random.Random(seed)
    # Counts in warpgroups: the producer arrives on a full stage once, on a Q buffer twice
    # (cp.async and release); the consumers arrive on an empty stage once each, a lone consumer
    # twice; both consumers free a Q buffer.
    full = [MBarrier(1) for _ in range(4)]  # K stage 0, 1, V stage 0, 1
    empty = [MBarrier(2) for _ in range(4)]
    qfull = [MBarrier(2) for _ in range(2)]
    qempty = [MBarrier(2) for _ in range(2)]
    named = {i: NamedBarrier(2) for i in (3, 4, 5, 7, 8, 9)}
    turn_pair = [3, 8] if alternate_turns else [3, 3]
    kbuf, vbuf, qbuf, info = [None] * 2, [None] * 2, [None] * 2, [None] * 2
    work = list(items) + [None]  # None: the work list is exhausted
    blocked = {}

    def wait(bar, parity, who, what):
        while not bar.passed(parity):
            blocked[who] = what
            yield
        blocked.pop(who, None)

    def sync(i, who):
        generation = named[i].generation
        named[i].arrive()
        while named[i].generation == generation:
            blocked[who] = f"named barrier {i}"
            yield
        blocked.pop(who, None)

    def producer():
        taken = 0
        gt = 0  # tiles streamed over all items: stage gt % 2, use gt / 2

        def prepare(li):  # item li's info and Q rows into buffer li % 2
            nonlocal taken
            b = li & 1
            item = work[taken]
            if item is not None:
                taken += 1
            if li >= 2:
                yield from wait(qempty[b], ((li >> 1) - 1) & 1, "P", f"qempty, item {li}")
            info[b] = (li, item)
            qbuf[b] = ("Q", li)
            qfull[b].arrive()
            yield
            qfull[b].arrive()

        def stream(li, t0, t1):
            nonlocal gt
            for t in range(t0, t1):
                st = gt & 1
                for which, buf in ((0, kbuf), (1, vbuf)):
                    if gt >= 2:
                        yield from wait(empty[2 * which + st], ((gt >> 1) - 1) & 1, "P", f"empty, item {li} tile {t}")
                    buf[st] = (li, t)
                    yield
                    full[2 * which + st].arrive()
                gt += 1

        yield from prepare(0)
        li = 0
        while True:
            assert info[li & 1][0] == li, "the producer read another item's info"
            item = info[li & 1][1]
            if item is None:
                return
            tiles = item[1]
            prep_at = tiles - 1 if tiles < 3 else 2  # as the kernel: after the item's third tile
            yield from stream(li, 0, prep_at + 1)
            yield from prepare(li + 1)
            yield from stream(li, prep_at + 1, tiles)
            li += 1

    def consumer(g):
        who = f"C{g}"
        gbase, li = 0, 0
        while True:
            b = li & 1
            yield from wait(qfull[b], (li >> 1) & 1, who, f"qfull, item {li}")
            assert info[b][0] == li, f"consumer {g} read another item's info"
            item = info[b][1]
            if item is None:
                return
            rows, tiles = item
            assert qbuf[b] == ("Q", li), f"consumer {g}: item {li}'s Q rows are not in its buffer"
            solo = rows <= 64
            if solo and g == 1:  # asleep until consumer 0 has waited on the item's last stage
                gbase += tiles
                yield from sync(5 + 2 * b, who)
                qempty[b].arrive()
                li += 1
                continue
            count = 2 if solo else 1
            pp = pingpong and not solo
            pair = turn_pair[b]
            if pp and g == 1:
                named[pair].arrive()

            def turn_begin():
                if pp:
                    yield from sync(pair + g, who)

            def turn_end():
                if pp:
                    named[pair + 1 - g].arrive()

            def wait_full(which, gt, t):
                yield from wait(full[2 * which + (gt & 1)], (gt >> 1) & 1, who, f"full, item {li} tile {t}")

            if tiles > 0:
                yield from wait_full(0, gbase, 0)
                yield from turn_begin()
                assert kbuf[gbase & 1] == (li, 0), f"consumer {g}: wrong key tile"
                turn_end()
                yield
                empty[gbase & 1].arrive(count)
                for t in range(1, tiles):
                    gt = gbase + t
                    if solo:  # the lone consumer: S(t) waited on and released before V(t - 1) is waited on
                        yield from wait_full(0, gt, t)
                        assert kbuf[gt & 1] == (li, t), f"consumer {g}: wrong key tile"
                        yield
                        empty[gt & 1].arrive(count)
                        yield from wait_full(1, gt - 1, t - 1)
                        assert vbuf[(gt - 1) & 1] == (li, t - 1), f"consumer {g}: wrong value tile"
                        yield
                        empty[2 + ((gt - 1) & 1)].arrive(count)
                        continue
                    yield from wait_full(0, gt, t)
                    yield from turn_begin()
                    assert kbuf[gt & 1] == (li, t), f"consumer {g}: wrong key tile"
                    yield  # S(t) issued; V(t - 1) is waited on only now, inside the turn
                    yield from wait_full(1, gt - 1, t - 1)
                    assert vbuf[(gt - 1) & 1] == (li, t - 1), f"consumer {g}: wrong value tile"
                    turn_end()
                    yield
                    empty[gt & 1].arrive(count)
                    yield
                    empty[2 + ((gt - 1) & 1)].arrive(count)
                last = gbase + tiles - 1
                yield from wait_full(1, last, tiles - 1)
                yield from turn_begin()
                assert vbuf[last & 1] == (li, tiles - 1), f"consumer {g}: wrong value tile"
                turn_end()
                yield
                empty[2 + (last & 1)].arrive(count)
            if pp and g == 0:
                yield from sync(pair, who)  # absorbs consumer 1's last turn
            if solo:
                named[5 + 2 * b].arrive()
            gbase += tiles
            yield  # the epilogue stages the output in the Q buffer
            assert qbuf[b] == ("Q", li), f"consumer {g}: Q buffer refilled under the epilogue"
            qempty[b].arrive()
            li += 1

    alive = {"P": producer(), "C0": consumer(0), "C1": consumer(1)}
    for _ in range(1_000_000):
        if not alive:
            return
        name = rnd.choice(list(alive))
        try:
            next(alive[name])
        except StopIteration:
            del alive[name]
    raise RuntimeError(f"deadlock: items {items}, blocked {blocked}")


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    runs = int(args[0]) if args else 2000
    alternate = "--same-turn-barriers" not in sys.argv
    rnd = random.Random(1)
    for k in range(runs):
        items = [(rnd.choice([1, 20, 64, 65, 100, 128]), rnd.randint(0, 5)) for _ in range(rnd.randint(0, 7))]
        run(items, seed=k, pingpong=rnd.random() < 0.8, alternate_turns=alternate)
    print(f"{runs} random work lists, each under a random interleaving: every read saw its own data, no deadlock")


if __name__ == "__main__":
    main()
