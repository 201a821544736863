"""Large-gallery retrieval: exhaustive distributional ranking vs faiss prefilter on mu + exact re-ranking.

Synthetic vMF galleries of 10^4, 10^5 and 10^6 items (d = 64 and 256): mu clustered (200 random
centres, von Mises–Fisher spread around them), kappa log-uniform in [1, 1000] (a constant kappa
would make every distributional ranking a cosine ranking). Queries are gallery-like vMFs.

For each size: index build time (IVF, inner product on mu), ms per query for the exhaustive
closed-form ranking (KL) and for prefilter + exact re-ranking, and the top-10 agreement of the two
(|intersection| / 10, averaged over queries); SSW re-ranking is measured the same way up to 10^5
(its exhaustive reference needs L samples per gallery item). SSW rankings are Monte-Carlo
estimates: the gallery samples of a shortlist differ from those of the whole gallery, so the
column ``noise`` gives the agreement of two exhaustive SSW rankings with different seeds, the
ceiling any re-ranking can reach. Ends with one line
``n=<items> ms_per_query=<x> top10_agreement=<y>`` for the largest gallery (KL).
"""
from __future__ import annotations

import time

import torch

from _common import parser, setup
from mmkit.distributions import VonMisesFisher
from mmkit.retrieval import GalleryIndex, score


def make_gallery(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(200, d, generator=g), dim=-1)
    which = torch.randint(0, 200, (n,), generator=g)
    loc = torch.nn.functional.normalize(centres[which] + 0.35 * torch.randn(n, d, generator=g) / d**0.5 * 4, dim=-1)
    kappa = torch.exp(torch.empty(n).uniform_(0.0, float(torch.log(torch.tensor(1000.0))), generator=g))
    return loc, kappa


def topk_exhaustive(q_loc, q_kappa, loc, kappa, k, distance, chunk=100_000, **kw):
    best_s, best_i = None, None
    for s in range(0, loc.shape[0], chunk):
        sc = score([(q_loc, q_kappa)], (loc[s:s + chunk], kappa[s:s + chunk]), distance=distance, **kw)
        top = sc.topk(min(k, sc.shape[1]), dim=1)
        cand_s, cand_i = top.values, top.indices + s
        if best_s is None:
            best_s, best_i = cand_s, cand_i
        else:
            both_s, both_i = torch.cat([best_s, cand_s], 1), torch.cat([best_i, cand_i], 1)
            sel = both_s.topk(k, dim=1).indices
            best_s, best_i = both_s.gather(1, sel), both_i.gather(1, sel)
    return best_i


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return sum(len(set(x.tolist()) & set(y.tolist())) for x, y in zip(a, b)) / a.numel()


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--dims", type=int, nargs="+", default=[64, 256])
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--shortlist", type=int, default=1000)
    p.add_argument("--ssw-max", type=int, default=100_000)
    p.add_argument("--n-probe", type=int, default=256, help="IVF cells visited per query")
    args = p.parse_args()
    setup(args)
    print(f"{'n':>9}{'d':>5}{'dist':>6}{'build s':>9}{'exh ms/q':>10}{'pre ms/q':>10}{'top10 agr':>11}{'noise':>8}")
    last = None
    for d in args.dims:
        for n in args.sizes:
            loc, kappa = make_gallery(n, d, args.seed)
            qi = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed + 1))[: args.queries]
            with torch.random.fork_rng():
                torch.manual_seed(args.seed + 2)
                q_loc = VonMisesFisher(loc[qi], kappa[qi]).sample()
            q_kappa = kappa[qi]
            t0 = time.perf_counter()
            index = GalleryIndex(loc, kappa, index="ivf", n_probe=args.n_probe)
            build = time.perf_counter() - t0
            for distance in ("kl", "ssw"):
                if distance == "ssw" and n > args.ssw_max:
                    continue
                kw = {"n_samples": 16, "n_projections": 20} if distance == "ssw" else {}
                nq = args.queries if distance == "kl" else min(args.queries, 10)
                t0 = time.perf_counter()
                exact = torch.cat([topk_exhaustive(q_loc[i:i + 1], q_kappa[i:i + 1], loc, kappa, 10, distance,
                                                   chunk=100_000 if distance == "kl" else 2_000, **kw)
                                   for i in range(nq)])
                exh_ms = 1000 * (time.perf_counter() - t0) / nq
                t0 = time.perf_counter()
                ids, _ = index.search([(q_loc[:nq], q_kappa[:nq])], k=10,
                                      shortlist=args.shortlist if distance == "kl" else 200, distance=distance, **kw)
                pre_ms = 1000 * (time.perf_counter() - t0) / nq
                agr = agreement(ids, exact)
                noise = "-"
                if distance == "ssw":
                    other = torch.cat([topk_exhaustive(q_loc[i:i + 1], q_kappa[i:i + 1], loc, kappa, 10, distance,
                                                       chunk=2_000, seed=args.seed + 7, **kw) for i in range(nq)])
                    noise = f"{agreement(other, exact):.3f}"
                print(f"{n:>9}{d:>5}{distance:>6}{build:>9.1f}{exh_ms:>10.1f}{pre_ms:>10.1f}{agr:>11.3f}{noise:>8}",
                      flush=True)
                if distance == "kl":
                    last = (n, pre_ms, agr)
    print(f"n={last[0]} ms_per_query={last[1]:.1f} top10_agreement={last[2]:.3f}")


if __name__ == "__main__":
    main()
