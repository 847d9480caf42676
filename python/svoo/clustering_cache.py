"""Where the reuse steps' clusterings wait between steps (the CUDA path of svoo.diffusers).

Every (CFG branch, expert, layer, batch element) slot keeps the clustering of its last recluster
step (`CudaPlanner.clustering_bytes`: centroids, sizes, offsets, permutations; about 11 MB at
Wan2.1-1.3B 480p, 15 MB at 720p, 51 MB at Wan2.1-14B 720p) for the reuse steps in between. A
generation with classifier-free guidance keeps two branches' slots: on the device that is 15-18 %
of a Wan2.1-1.3B generation's peak memory (bench/e2e, run203; 3.6 % and less with "host", run205).

`where="host"` (svoo.diffusers' default) keeps the slots in page-locked host memory. A recluster
step copies its clustering down (asynchronously, on the call's stream); a reuse step copies it
back. So that the copy does not sit in the layer's path, the cache learns which slot followed
which the last time and, while one slot is loaded, uploads the next into a device buffer on a side
stream: the device holds at most two slots. Under CUDA graph capture nothing is prefetched: a
captured reuse step loads its slots straight from host memory, on its own stream (a graph of a
whole 1.3B 480p reuse step replayed in 555.6 ms against 566.7 eager: check_cuda.py, run202).
`where="device"` keeps every slot in a device buffer (no copies across the bus).
"""
from __future__ import annotations

from typing import Any, Dict, Hashable, Optional, Tuple

import torch

from svoo import _svoo
from svoo.torch import _dl

WHERE = ("host", "device")


def _capturing() -> bool:
    return torch.cuda.is_current_stream_capturing()


class ClusteringCache:
    """Slot -> (step of its clustering, buffer, plan shape), in host or device memory."""

    def __init__(self, where: str = "host"):
        if where not in WHERE:
            raise ValueError(f"clustering_cache must be one of {WHERE}, not {where!r}")
        self.where = where
        self.entries: Dict[Hashable, Tuple[int, torch.Tensor, Tuple[int, ...]]] = {}
        self._saved: Dict[Hashable, Optional[torch.cuda.Event]] = {}   # the download of each host slot is done
        self._pending: Dict[Hashable, Tuple[torch.Tensor, torch.cuda.Event]] = {}  # prefetched uploads
        self._uploads: Dict[Hashable, torch.cuda.Event] = {}  # each host slot's last upload is done
        self._next: Dict[Hashable, Hashable] = {}  # the slot loaded after this one last time
        self._last: Optional[Hashable] = None
        self._side: Dict[int, torch.cuda.Stream] = {}

    def step_of(self, slot) -> Optional[int]:
        e = self.entries.get(slot)
        return None if e is None else e[0]

    def usable(self, slot, shape) -> bool:
        e = self.entries.get(slot)
        return e is not None and e[2] == shape

    def device_bytes(self) -> int:
        """Bytes of the slots kept in device memory (not counting a prefetched upload)."""
        return sum(b.numel() for _, b, _ in self.entries.values() if b.is_cuda)

    def host_bytes(self) -> int:
        return sum(b.numel() for _, b, _ in self.entries.values() if not b.is_cuda)

    def save(self, slot, step: int, planner, shape, device: torch.device, stream: int) -> None:
        """Keeps the clustering `planner` holds now as `slot`'s (made at `step`)."""
        nbytes = planner.clustering_bytes
        old = self.entries.get(slot)
        buf = old[1] if old is not None and old[2] == shape else None
        if self.where == "device":
            if buf is None or buf.device != device:
                buf = torch.empty(nbytes, dtype=torch.uint8, device=device)
            planner.save_clustering(_dl(buf), stream)
        else:
            if buf is None:
                buf = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
            self._pending.pop(slot, None)
            read = self._uploads.pop(slot, None)
            capturing = _capturing()
            if read is not None and not capturing:  # an upload of the old contents may still be reading it
                torch.cuda.current_stream(device).wait_event(read)
            planner.save_clustering(_dl(buf), stream)
            self._saved[slot] = None if capturing else self._record(device)
        self.entries[slot] = (step, buf, shape)

    def load(self, slot, planner, device: torch.device, stream: int) -> None:
        """Restores `slot`'s clustering into `planner` (the caller checked `usable`)."""
        buf = self.entries[slot][1]
        if self.where == "device":
            planner.load_clustering(_dl(buf), stream)
            return
        capturing = _capturing()
        pend = self._pending.pop(slot, None)
        if pend is not None and not capturing:
            dev, ready = pend
            cur = torch.cuda.current_stream(device)
            cur.wait_event(ready)
            dev.record_stream(cur)  # the allocator must not hand it out before this stream is done with it
            planner.load_clustering(_dl(dev), stream)
        else:  # not prefetched (or captured): straight from host memory, on the call's stream
            planner.load_clustering(_dl(buf), stream)
        if self._last is not None and self._last != slot:
            self._next[self._last] = slot
        self._last = slot
        nxt = self._next.get(slot)
        if nxt is not None and not capturing:
            self._prefetch(nxt, device)

    def _prefetch(self, slot, device: torch.device) -> None:
        e = self.entries.get(slot)
        if e is None or slot in self._pending or e[1].is_cuda:
            return
        self._pending.clear()  # a prefetch that was not used (the order changed): its buffer goes back
        side = self._side.get(device.index)
        if side is None:  # one stream of its own (torch.cuda.Stream() would create torch's whole pool)
            with torch.cuda.device(device):
                side = torch.cuda.ExternalStream(_svoo.cuda_create_stream(), device=device)
            self._side[device.index] = side
        saved = self._saved.get(slot)
        if saved is not None:
            side.wait_event(saved)
        else:  # downloaded under capture: wait for everything the call's stream has queued
            side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            dev = torch.empty(e[1].numel(), dtype=torch.uint8, device=device)
            dev.copy_(e[1], non_blocking=True)
            ready = torch.cuda.Event()
            ready.record(side)
        self._pending[slot] = (dev, ready)
        self._uploads[slot] = ready

    @staticmethod
    def _record(device: torch.device) -> torch.cuda.Event:
        ev = torch.cuda.Event()
        ev.record(torch.cuda.current_stream(device))
        return ev
