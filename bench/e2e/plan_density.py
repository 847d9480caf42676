"""The token density of svoo's device plans as a model runs: kept (query, key) token pairs over
all pairs, per head, from the plan's labels and keep. The selection policy counts kept key
*clusters*; clusters differ in size and the kept ones tend to be the large ones, so the token
density (what the sparse attention's time follows) is higher than the kept fraction of clusters.
"""
from typing import List


def token_density(torch, planner, device: str = "cuda") -> List[float]:
    """Per head: kept query-key token pairs / all pairs, of the planner's current plan (waits)."""
    H, Nq, Nk, kq, kk = planner.heads, planner.q_tokens, planner.k_tokens, planner.kq, planner.kk
    ql = torch.empty(H, Nq, dtype=torch.int32, device=device)
    kl = torch.empty(H, Nk, dtype=torch.int32, device=device)
    keep = torch.empty(H, kq, kk, dtype=torch.uint8, device=device)
    stream = torch.cuda.current_stream().cuda_stream if device == "cuda" else 0
    planner.copy_plan(ql.__dlpack__(), kl.__dlpack__(), keep.__dlpack__(), stream)
    out = []
    for h in range(H):
        qs = torch.bincount(ql[h].long(), minlength=kq).double()
        ks = torch.bincount(kl[h].long(), minlength=kk).double()
        out.append(float((qs[:, None] * keep[h].double() * ks[None, :]).sum() / (Nq * Nk)))
    return out


class measure_token_density:
    """While active, every sparse attention svoo.diffusers runs on the device first appends its
    plan's per-head token densities to `self.calls` (one list per layer call). svoo.diffusers asks
    svoo.torch.planner for its planner at each call; this hands out a measuring proxy."""

    def __init__(self, torch):
        self.torch, self.calls = torch, []

    def __enter__(self):
        import svoo.torch as st
        self._st, self._make = st, st.planner
        outer = self

        class Measuring:
            def __init__(self, p):
                self._p = p

            def __getattr__(self, name):
                return getattr(self._p, name)

            def sparse_attention(self, q, k, v, out, stream=0):
                outer.calls.append(token_density(outer.torch, self._p))
                return self._p.sparse_attention(q, k, v, out, stream)

        st.planner = lambda *a, **kw: Measuring(self._make(*a, **kw))
        return self

    def __exit__(self, *exc):
        self._st.planner = self._make
        return False

    def summary(self):
        per_layer = [sum(d) / len(d) for d in self.calls]
        if not per_layer:
            return None
        return {"per_layer_mean_over_heads": per_layer, "mean": sum(per_layer) / len(per_layer),
                "min_head": min(min(d) for d in self.calls), "max_head": max(max(d) for d in self.calls)}
