"""Device memory outside torch's allocator after each step of the host clustering cache's path, on
the GPU (run204-205: torch's first pool stream costs 70 MiB, svoo's own stream nothing).
    PYTHONPATH=<svoo install> python3 bench/e2e/memory_probe.py
"""
import torch
import svoo, svoo.torch as st

def outside():
    free, total = torch.cuda.mem_get_info()
    return ((total - free) - torch.cuda.memory_reserved()) / 2**20

torch.cuda.init()
x = torch.zeros(1, device="cuda")
print(f"start {outside():8.1f} MiB")
p = st.planner("cuda", 12, 32760, 32760, 256, 1024, 128)
print(f"planner {outside():8.1f} MiB  (workspace_bytes {p.workspace_bytes / 2**20:.1f} MiB)")
q, k = (torch.randn(12, 32760, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
s = torch.cuda.current_stream().cuda_stream
p.cluster(q, k, 2, 0, "coclustering", s, 128)
torch.cuda.synchronize()
print(f"cluster {outside():8.1f} MiB")
dev = torch.empty(p.clustering_bytes, dtype=torch.uint8, device="cuda")
p.save_clustering(dev, s); torch.cuda.synchronize()
print(f"save to device {outside():8.1f} MiB")
from svoo import _svoo
side = torch.cuda.ExternalStream(_svoo.cuda_create_stream(), device="cuda")
print(f"svoo's own stream {outside():8.1f} MiB")
pool = torch.cuda.Stream()
print(f"torch.cuda.Stream() {outside():8.1f} MiB")
ev = torch.cuda.Event(); ev.record()
print(f"event {outside():8.1f} MiB")
h = torch.empty(p.clustering_bytes, dtype=torch.uint8, pin_memory=True)
print(f"pinned alloc {outside():8.1f} MiB")
p.save_clustering(h, s); torch.cuda.synchronize()
print(f"save to pinned {outside():8.1f} MiB")
p.load_clustering(h, s); torch.cuda.synchronize()
print(f"load from pinned {outside():8.1f} MiB")
with torch.cuda.stream(side):
    d2 = torch.empty(p.clustering_bytes, dtype=torch.uint8, device="cuda")
    d2.copy_(h, non_blocking=True)
torch.cuda.synchronize()
print(f"side-stream upload {outside():8.1f} MiB")
hs = [torch.empty(p.clustering_bytes, dtype=torch.uint8, pin_memory=True) for _ in range(30)]
for b in hs:
    p.save_clustering(b, s)
torch.cuda.synchronize()
print(f"30 more pinned slots {outside():8.1f} MiB")
prof = torch.full((12,), 0.15, dtype=torch.float64, device="cuda")
p.select_device(0.9, 0.15, 0.2, None, "released", prof, s)
v = torch.randn_like(q); o = torch.empty_like(q)
p.sparse_attention(q, k, v, o, s); torch.cuda.synchronize()
print(f"select + attention {outside():8.1f} MiB")
