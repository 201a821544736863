"""Large-gallery retrieval: exhaustive distributional ranking vs GalleryIndex (faiss prefilter + exact re-ranking).

Synthetic vMF galleries of 10^4, 10^5 and 10^6 items (d = 64 and 256): mu clustered (200 random
centres, von Mises–Fisher spread around them), kappa log-uniform in [1, 1000] (a constant kappa
would make every distributional ranking a cosine ranking). Queries are gallery-like vMFs: the
kappa of a random gallery item and a direction drawn from that item's vMF.

For each size: index build time (``GalleryIndex(index="ivf")``: k-means cells of mu for cosine /
ELK / SSW, and the kappa-bin x mu-cell index of augmented vectors whose inner product is -KL), ms
per query for the exhaustive ranking (:func:`mmkit.retrieval.scores.score` over the whole gallery in
float64 chunks, batched over the queries) and for the index (prefilter + exact re-ranking, batched
the same way), and the top-10 agreement of the two (|intersection| / 10, averaged over queries).
Distances: KL, ELK and cosine; SSW up to ``--ssw-max`` items (its exhaustive reference needs L
samples per gallery item). SSW rankings are Monte-Carlo estimates: the gallery samples of a
shortlist differ from those of the whole gallery, so the column ``noise`` gives the agreement of
two exhaustive SSW rankings with different seeds, the ceiling any re-ranking can reach. Ends with
one line ``n=<items> ms_per_query=<x> top10_agreement=<y>`` for the largest gallery (KL).
"""
from __future__ import annotations

import time

import faiss
import torch

from _common import parser, setup
from mmkit.core.distributions import VonMisesFisher
from mmkit.retrieval.index import GalleryIndex
from mmkit.retrieval.scores import score

CHUNK = 100_000  # gallery rows per step (generation and exhaustive ranking)


def make_gallery(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clustered unit mu (n, d) and log-uniform kappa in [1, 1000] (n,), float32, generated in chunks."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(200, d, generator=g), dim=-1)
    which = torch.randint(0, 200, (n,), generator=g)
    loc = torch.empty(n, d)
    for s in range(0, n, CHUNK):
        rows = which[s:s + CHUNK]
        noise = 0.35 * torch.randn(len(rows), d, generator=g) / d**0.5 * 4
        loc[s:s + CHUNK] = torch.nn.functional.normalize(centres[rows] + noise, dim=-1)
    kappa = torch.exp(torch.empty(n).uniform_(0.0, float(torch.log(torch.tensor(1000.0))), generator=g))
    return loc, kappa


def topk_exhaustive(q_loc, q_kappa, loc, kappa, k, distance, chunk, **kw) -> torch.Tensor:
    """Exact top-k (Q, k) of ``score`` over the whole gallery, in chunks; closed forms in float64."""
    dtype = torch.float32 if distance == "ssw" else torch.float64
    q = [(q_loc.to(dtype), q_kappa.to(dtype))]
    best_s, best_i = None, None
    for s in range(0, loc.shape[0], chunk):
        sc = score(q, (loc[s:s + chunk].to(dtype), kappa[s:s + chunk].to(dtype)), distance=distance, **kw)
        top = sc.topk(min(k, sc.shape[1]), dim=1)
        cand_s, cand_i = top.values, top.indices + s
        if best_s is not None:
            cand_s, cand_i = torch.cat([best_s, cand_s], 1), torch.cat([best_i, cand_i], 1)
        sel = cand_s.topk(min(k, cand_s.shape[1]), dim=1).indices
        best_s, best_i = cand_s.gather(1, sel), cand_i.gather(1, sel)
    return best_i


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return sum(len(set(x.tolist()) & set(y.tolist())) for x, y in zip(a, b)) / a.numel()


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--dims", type=int, nargs="+", default=[64, 256])
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--shortlist", type=int, default=1000, help="candidates re-ranked for ELK and cosine")
    p.add_argument("--kl-shortlist", type=int, default=100,
                   help="candidates re-ranked for KL (the KL index already ranks by -KL in float32)")
    p.add_argument("--ssw-shortlist", type=int, default=200)
    p.add_argument("--ssw-max", type=int, default=100_000, help="largest gallery with an SSW row")
    p.add_argument("--n-probe", type=int, default=None, help="mu-cells scanned (cosine, ELK, SSW); default: index's")
    p.add_argument("--kl-probe", type=int, default=None, help="cells of the KL index scanned; default: index's")
    args = p.parse_args()
    setup(args)
    faiss.omp_set_num_threads(args.threads)
    print(f"{'n':>9}{'d':>5}{'dist':>7}{'build s':>9}{'exh ms/q':>10}{'idx ms/q':>10}{'top10 agr':>11}{'noise':>8}")
    last = None
    for d in args.dims:
        for n in args.sizes:
            loc, kappa = make_gallery(n, d, args.seed)
            qi = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed + 1))[: args.queries]
            with torch.random.fork_rng():
                torch.manual_seed(args.seed + 2)
                q_loc = VonMisesFisher(loc[qi], kappa[qi]).sample()
            q_kappa = kappa[qi]
            distances = ("kl", "elk", "cosine") + (("ssw",) if n <= args.ssw_max else ())
            t0 = time.perf_counter()
            index = GalleryIndex(loc, kappa, index="ivf", distances=distances, n_probe=args.n_probe,
                                 kl_probe=args.kl_probe)
            build = time.perf_counter() - t0
            print(f"# n={n} d={d}: {index.n_lists} mu-cells x {index.n_kappa_bins} kappa-bins, "
                  f"n_probe={index.n_probe}, kl_probe={index.kl_probe}, kl_near={index.kl_near}", flush=True)
            for distance in distances:
                ssw = distance == "ssw"
                kw = {"n_samples": 16, "n_projections": 20} if ssw else {}
                nq = min(args.queries, 10) if ssw else args.queries
                ql, qk = q_loc[:nq], q_kappa[:nq]
                t0 = time.perf_counter()
                exact = topk_exhaustive(ql, qk, loc, kappa, 10, distance, chunk=2_000 if ssw else 20_000, **kw)
                exh_ms = 1000 * (time.perf_counter() - t0) / nq
                t0 = time.perf_counter()
                shortlist = {"ssw": args.ssw_shortlist, "kl": args.kl_shortlist}.get(distance, args.shortlist)
                ids, _ = index.search([(ql, qk)], k=10, shortlist=shortlist, distance=distance, **kw)
                idx_ms = 1000 * (time.perf_counter() - t0) / nq
                agr = agreement(ids, exact)
                noise = "-"
                if ssw:
                    other = topk_exhaustive(ql, qk, loc, kappa, 10, distance, chunk=2_000, seed=args.seed + 7, **kw)
                    noise = f"{agreement(other, exact):.3f}"
                print(f"{n:>9}{d:>5}{distance:>7}{build:>9.1f}{exh_ms:>10.1f}{idx_ms:>10.1f}{agr:>11.3f}{noise:>8}",
                      flush=True)
                if distance == "kl":
                    last = (n, idx_ms, agr)
            del index, loc, kappa
    print(f"n={last[0]} ms_per_query={last[1]:.1f} top10_agreement={last[2]:.3f}")


if __name__ == "__main__":
    main()
