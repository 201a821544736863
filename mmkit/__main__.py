"""Command-line entry point: ``python -m mmkit <command>`` (``mmkit <command>`` once installed).

Commands: ``build-data``, ``import-features``, ``train``, ``evaluate``, ``reproduce`` (the notebook
pipeline), ``study`` (the pre-registered study), ``search-kappa``, ``demo-runs`` (the pretrained pair
shipped for the start-here notebook) and ``lab`` (JupyterLab on the notebooks, ``make lab``).
``train`` without ``--data`` trains on the synthetic demo bundle and says so before it starts.
``--help`` shows :data:`DESCRIPTION`, a one-line summary per command, every option with its default,
and examples (:data:`EXAMPLES`).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
import time
from pathlib import Path

from mmkit.vocab import CONTRASTIVE_READINGS, DISTANCES, FUSIONS, METHODS, SPLITS

#: What mmkit is, in one line (the first line of ``--help``).
DESCRIPTION = "mmkit: probabilistic multimodal music retrieval (audio, score images, captions) on the hypersphere."
#: What the line means, under it.
ABOUT = ("Each recording, score image and caption becomes a von Mises-Fisher distribution on one sphere, trained "
         "with a contrastive loss plus a spherical sliced-Wasserstein loss, and items are retrieved by distances "
         "between distributions: a reproduction and extension of Nakatsuka, Hamasaki & Goto, ISMIR 2024.")

#: Examples shown under ``python -m mmkit --help``.
EXAMPLES = """examples:
  python -m mmkit build-data --preset tiny          # 200 music21 triplets, about a minute
  python -m mmkit train --method proposed --data tiny --epochs 150 --batch-size 16 --out runs/p0
  python -m mmkit evaluate --runs runs/p0 --split val --distance kl
  python -m mmkit build-data --from my-music/items.csv --out my-bundle    # your own media (docs/your_data.md)
  python -m mmkit reproduce --preset smoke          # check the whole pipeline on tiny data
  python -m mmkit lab                               # JupyterLab on your copy of the notebooks (make lab)

'python -m mmkit COMMAND --help' describes a command and all its options."""

#: What each reproduce preset runs and costs (the times measured on a 2-core machine, docs/results.md).
PRESETS = {
    "quick": "the committed results (make reproduce): small data (2,000 music21 triplets); Baseline, PCME, MPC, "
             "L_S only and Proposed at six weights; 3 seeds, 20 epochs. 27.4 min on a fresh clone (8.3 of them "
             "building the data), 16.6 min with the data cached.",
    "paper": "full data (about 15,000 excerpts), 5 seeds, 40 epochs. Not measured: at quick's rates building the "
             "data takes about an hour and training about 25 times as long as quick's (7.5x the items, 2x the "
             "epochs, 5 seeds instead of 3).",
    "smoke": "tiny data (200 triplets, built in about a minute), 1 seed, 2 epochs, small models, KL ranking: "
             "checks that the pipeline runs; its numbers mean nothing.",
}


def _paragraphs(*texts: str) -> str:
    return "\n\n".join(textwrap.fill(t, 100) for t in texts if t)


def _command(sub, name: str, summary: str, details: str = "", examples: str = "",
             extra: str = "") -> argparse.ArgumentParser:
    """A subcommand: ``summary`` is its line in ``--help`` and the first of its own help, then ``details``
    (wrapped), ``extra`` (as written) and ``examples`` (the epilog)."""
    description = _paragraphs(summary[0].upper() + summary[1:] + ".", details) + (f"\n\n{extra}" if extra else "")
    return sub.add_parser(name, help=summary, description=description,
                          epilog=f"examples:\n{examples}" if examples else None,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _float_or_inf(text: str) -> float:
    value = float(text)
    if math.isnan(value):
        raise argparse.ArgumentTypeError("lambda-s must not be NaN")
    return value


def _fractions(text: str) -> tuple[float, float, float]:
    parts = [float(x) for x in text.replace(",", " ").split()]
    if len(parts) != 3 or any(not math.isfinite(x) or x < 0 for x in parts) or sum(parts) <= 0:
        raise argparse.ArgumentTypeError(f"expected three non-negative numbers 'train,val,test', got {text!r}")
    return parts[0], parts[1], parts[2]


def _user_data(build, *args, **kwargs) -> int:
    """Run build-data --from or import-features: bad input is an error message (exit 2), a result
    prints what was written (the skipped rows, the card)."""
    import warnings

    from mmkit.data.user.items import ColumnWarning, InputError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ColumnWarning)
        try:
            summary = build(*args, **kwargs)
        except (InputError, ValueError) as exc:
            summary, error = None, exc
    for w in caught:  # columns that are ignored: said first, as lines of their own
        print(f"warning: {w.message}" if issubclass(w.category, ColumnWarning) else
              warnings.formatwarning(w.message, w.category, w.filename, w.lineno), file=sys.stderr)
    if summary is None:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"bundle: {summary['bundle']}" + (" (unchanged inputs: reused)" if summary["bundle_reused"] else ""))
    print(f"items={summary['items']} train={summary['train']} val={summary['val']} test={summary['test']} "
          f"skipped={len(summary['skipped'])} seconds={summary['seconds']}")
    for p in summary["skipped"]:
        print(f"  skipped {p['source']} {p['where']} (id {p['item']!r}): {p['kind']}: {p['reason']}")
    if summary.get("card"):
        print(f"dataset card: {summary['card']}")
    return 0


def _build_from_media(args) -> int:
    from mmkit.data.user.media import build_from_media

    if not args.out:
        print("error: build-data --from needs --out DIR (the bundle directory)", file=sys.stderr)
        return 2
    return _user_data(build_from_media, args.source, args.out, cache=args.cache, workers=args.workers,
                      skip_bad=args.skip_bad, render_audio=args.render_audio, fractions=args.split_fractions,
                      progress=not args.no_progress)


def _import_features(args) -> int:
    from mmkit.data.user.imports import import_features

    vectors = {m: getattr(args, m) for m in ("audio", "image", "text") if getattr(args, m)}
    return _user_data(import_features, args.out, vectors, ids=args.ids, captions=args.captions, splits=args.splits,
                      groups=args.groups, items=args.items, cache=args.cache, workers=args.workers,
                      skip_bad=args.skip_bad, fractions=args.split_fractions, name=args.name,
                      progress=not args.no_progress)


def _build_data(args) -> int:
    if args.source:
        return _build_from_media(args)
    from mmkit.data.embedded.build import build_dataset
    from mmkit.data.embedded.real import REAL_PRESETS, build_real_dataset

    card = args.card if args.card is not None else \
        "reports/dataset_card.md" if args.preset == "small" else f"reports/dataset_card_{args.preset}.md"
    if args.preset in REAL_PRESETS:
        if args.collections:
            print("error: --collections does not apply to the -real presets (same works as their base)", file=sys.stderr)
            return 2
        summary = build_real_dataset(args.preset, cache=args.cache, workers=args.workers,
                                     progress=not args.no_progress, card=card or None)
    else:
        summary = build_dataset(args.preset, cache=args.cache,
                                collections=tuple(args.collections) if args.collections else None,
                                workers=args.workers, progress=not args.no_progress, card=card or None)
    print(f"bundle: {summary['bundle']}")
    if card:
        print(f"dataset card: {card}")
    print(f"items={summary['items']} train={summary['train']} val={summary['val']} test={summary['test']} "
          f"skipped={summary['skipped']} seconds={summary['seconds']}")
    return 0


def _train(args) -> int:
    from mmkit.data import resolve_data
    from mmkit.model.config import TrainConfig
    from mmkit.training.loop import fit

    values = json.loads(args.config.read()) if args.config else {}
    for key in ("method", "epochs", "seed", "lambda_s", "contrastive", "dim", "batch_size", "threads", "encoder"):
        value = getattr(args, key)
        if value is not None:
            values[key] = value
    config = TrainConfig.from_dict(values)
    first_rank = os.environ.get("RANK", "0") == "0"   # under torchrun, said once
    if args.data is None and first_rank:  # said before anything starts: the default is not music
        print("data: synthetic, the generated demo bundle (random features with cross-modal structure, not music), "
              "because no --data was given; for the music21 triplets pass --data tiny (200, ~1 min to build), "
              "small (2,000, ~10 min) or full, or a bundle directory", flush=True)
    data_arg = args.data or "synthetic"
    data = resolve_data(data_arg, cache_dir=args.cache, progress=not args.no_progress)
    spec = data_arg if data_arg in ("tiny", "small", "full", "synthetic") else str(Path(data_arg).resolve())
    if first_rank:
        print(f"data: {spec}: " + ", ".join(f"{name} {len(part)}" for name, part in data.items()) + " items", flush=True)
    summary = fit(config, data, args.out, progress=not args.no_progress, data_spec=spec, tensorboard=args.tensorboard)
    tasks = summary["val_tasks"]
    print(f"best epoch {summary['best_epoch']}: val mean MRR {summary['val_score']:.4f}")
    for name, m in tasks.items():
        print(f"  {name:<8} R@1 {m['R@1']:6.2f}  R@10 {m['R@10']:6.2f}  MRR {m['MRR']:.4f}  MR {m['MR']:g}")
    print(f"run directory: {args.out}")
    return 0


def _evaluate(args) -> int:
    from mmkit.analysis.evaluate import aggregate, evaluate_run
    from mmkit.analysis.reports import write_rows_csv

    results = [evaluate_run(run, split=args.split, distance=args.distance, fusion=args.fusion,
                            n_samples=args.samples, n_projections=args.projections) for run in args.runs]
    rows = aggregate(results)
    table: dict = {}
    for row in rows:
        key = (row["method"], row["lambda_s"], row["task"])
        table.setdefault(key, {})[row["metric"]] = row
    print(f"{'method':<10}{'lambda_s':>9}  {'task':<8}" + "".join(f"{m:>16}" for m in ("R@1", "R@5", "R@10", "R@15", "MRR"))
          + f"{'MR':>10}{'seeds':>7}")
    for (method, lam, task), metrics in table.items():
        cells = "".join(f"{metrics[m]['mean']:>9.3f} ±{metrics[m]['std']:>5.3f}" if m == "MRR" else
                        f"{metrics[m]['mean']:>9.2f} ±{metrics[m]['std']:>5.2f}" for m in ("R@1", "R@5", "R@10", "R@15", "MRR"))
        print(f"{method:<10}{lam:>9}  {task:<8}{cells}{metrics['MR']['mean']:>10.1f}{metrics['MR']['n_seeds']:>7}")
    csv_path = Path(args.csv) if args.csv else Path(args.runs[0]).resolve().parent / f"evaluation_{args.split}.csv"
    write_rows_csv(rows, csv_path)
    print(f"wrote {csv_path}")
    return 0


def _reproduce(args) -> int:
    from mmkit.pipeline.reproduce import (COMMITTED_PRESET, output_dirs, plan, refresh_widget_screenshot, results_dir,
                                          run_plan)

    if args.readme and results_dir(args.preset, args.data, args.encoder) != Path("reports"):
        print(f"error: --readme takes the tables of --preset {COMMITTED_PRESET} on its own data only", file=sys.stderr)
        return 2
    vars(args).update(output_dirs(args.preset, args.data, args.encoder, runs_dir=args.runs_dir,
                                  tables_dir=args.tables_dir, figures_dir=args.figures_dir))
    print(f"results: {args.tables_dir}, {args.figures_dir}", flush=True)
    steps = plan(args.preset, data=args.data, runs_dir=args.runs_dir, tables_dir=args.tables_dir,
                 figures_dir=args.figures_dir, cache=args.cache or "", encoder=args.encoder)
    print(f"reproduce --preset {args.preset}: {len(steps)} notebook steps, {args.jobs} at a time "
          f"(executed notebooks in {args.runs_dir}/notebooks)", flush=True)
    started = time.time()
    run_plan(steps, runs_dir=args.runs_dir, jobs=args.jobs, force=args.force)
    if args.preset != "smoke":
        refresh_widget_screenshot(args.preset, args.data, args.runs_dir, args.figures_dir, args.cache or "")
    print(f"pipeline finished in {(time.time() - started) / 60:.1f} min")
    if args.readme:
        from mmkit.analysis.reports import sync_readme_tables

        updated = sync_readme_tables(args.readme, args.tables_dir)
        print(f"{args.readme}: tables updated: {', '.join(updated)}" if updated else f"{args.readme}: tables up to date")
    written = sorted(str(p) for d in (args.tables_dir, args.figures_dir) for p in Path(d).glob("*.*")
                     if p.stat().st_mtime >= started - 1)
    print("files written:" if written else "files written: none (every step was up to date)")
    for path in written:
        print(f"  {path}")
    return 0


def _study(args) -> int:
    from mmkit.pipeline.study import EXPERIMENTS, grid, run_grid

    names = args.experiments or list(EXPERIMENTS)
    if args.verdicts:
        from mmkit.analysis.study import kappa_table, validation_table
        from mmkit.pipeline.study import write_verdicts

        print(write_verdicts(args.tables_dir).read_text())
        print(validation_table(args.store, args.experiments or None))
        print(kappa_table(args.store, args.experiments or None), end="")
        return 0
    if args.analyse:
        from mmkit.pipeline.study import report

        for name in names:
            for line in report(name, store=args.store, tables_dir=args.tables_dir, figures_dir=args.figures_dir):
                print(line)
        return 0
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    results = run_grid(grid(names, data=args.data, seeds=seeds), store=args.store, work=args.work, jobs=args.jobs,
                       executor=args.executor, cache=args.cache)
    failed = [r for r in results if str(r["status"]).startswith("failed")]
    return 1 if failed else 0


def _search_kappa(args) -> int:
    from mmkit.pipeline.kappa_search import grid, run_search, summarise

    if args.summarise:
        print(summarise(args.out).read_text(), end="")
        return 0
    specs = grid(args.settings.split(",") if args.settings else None, args.methods.split(","),
                 [int(s) for s in args.seeds.split(",")], epochs=args.epochs)
    results = run_search(specs, args.data, out=args.out, runs_dir=args.runs_dir, jobs=args.jobs, cache=args.cache)
    return 1 if any(str(r["status"]).startswith("failed") for r in results) else 0


def _search_kappa_parser(sub) -> None:
    from mmkit.pipeline.kappa_search import BASE, SETTINGS

    k = _command(sub, "search-kappa", "the kappa search of docs/hyperparameters.md on a bundle's validation split: "
                                      "train the declared grid (skipping stored runs) or --summarise it",
                 "One JSON per finished run in --out, written as runs finish; a rerun resumes. --summarise applies "
                 "the declared decision rule once the grid is complete (before: a partial table, nothing chosen). "
                 "The test split is never read.",
                 "  python -m mmkit search-kappa --data small-real --jobs 2\n"
                 "  python -m mmkit search-kappa --summarise")
    k.add_argument("--data", default="small-real", help="preset or bundle directory with views (default: small-real)")
    k.add_argument("--out", default="reports/kappa_search", help="per-run JSON results and summary.md, committed "
                                                               "(default: reports/kappa_search)")
    k.add_argument("--runs-dir", dest="runs_dir", default="runs/kappa_search",
                   help="training runs, git-ignored (default: runs/kappa_search)")
    k.add_argument("--jobs", type=int, default=2, help="runs at a time, one torch thread each (default: 2)")
    k.add_argument("--seeds", default="0,1", help="comma-separated seeds (default: 0,1, the protocol's)")
    k.add_argument("--methods", default="baseline,proposed",
                   help="comma-separated methods: baseline (lambda_S = 0), proposed (lambda_S = 1) "
                        "(default: baseline,proposed)")
    k.add_argument("--settings", default=None, help="comma-separated subset of the settings " + ", ".join(SETTINGS)
                                                    + " (default: all)")
    k.add_argument("--epochs", type=int, default=BASE["epochs"],
                   help=f"most epochs per run, patience {BASE['patience']} (default: {BASE['epochs']}, the protocol's)")
    k.add_argument("--cache", default=None, help="dataset cache for a preset (default: $MMKIT_CACHE or .cache/mmkit)")
    k.add_argument("--summarise", action="store_true", help="write and print <out>/summary.md, train nothing")


def _demo_runs_parser(sub) -> None:
    from mmkit.pipeline.study import FIXED_ROUND2, ROUND2_SETTINGS

    d = _command(sub, "demo-runs", "train the pretrained Proposed / Baseline pair that 00_start_here uses on tiny "
                                   "and write it, with its card, into the package",
                 "Trained on --data's training split without every item whose near-duplicate group occurs in "
                 "--exclude (the best epoch chosen on its validation split without them either; the test split "
                 "is never read), with the study's second-round settings and K* (seed 0). Only the weights, "
                 "config, manifest and metrics are shipped; card.json and CARD.md say how they were trained.",
                 "  python -m mmkit demo-runs\n"
                 "  python -m mmkit demo-runs --data /path/to/music21-small-seed0-v1.2 --exclude tiny --cache .cache/mmkit")
    d.add_argument("--data", default="small", help="preset or bundle directory trained on (default: small)")
    d.add_argument("--exclude", default="tiny", help="preset or bundle directory whose near-duplicate groups are left "
                                                     "out of training and validation (default: tiny)")
    d.add_argument("--cache", default=None, help="dataset cache for the presets (default: $MMKIT_CACHE or .cache/mmkit)")
    d.add_argument("--out", default=None, help="where the shipped pair and its card go (default: the package's "
                                               "mmkit/app/demo_runs)")
    d.add_argument("--work", default="runs/demo-runs", help="full training runs with checkpoints, git-ignored; a "
                                                            "rerun resumes (default: runs/demo-runs)")
    d.add_argument("--settings", default=str(ROUND2_SETTINGS), help=f"the second round's settings, K* read from it "
                                                                    f"(default: {ROUND2_SETTINGS})")
    d.add_argument("--epochs", type=int, default=FIXED_ROUND2["epochs"],
                   help=f"most epochs per run, patience {FIXED_ROUND2['patience']} (default: {FIXED_ROUND2['epochs']}, "
                        "the study's second round)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars")


def _demo_runs(args) -> int:
    import shlex

    from mmkit.app.demo import DEMO_RUNS
    from mmkit.data import resolve_data
    from mmkit.pipeline.demo import card_markdown, train_demo_pair

    command = shlex.join(["python", "-m", "mmkit", "demo-runs", "--data", args.data, "--exclude", args.exclude]
                         + (["--cache", args.cache] if args.cache else []) + ["--epochs", str(args.epochs)])
    data = resolve_data(args.data, cache_dir=args.cache, progress=not args.no_progress)
    exclude = resolve_data(args.exclude, cache_dir=args.cache, progress=not args.no_progress)
    out = args.out or DEMO_RUNS
    card = train_demo_pair(data, exclude, out=out, work=args.work, settings=args.settings, epochs=args.epochs,
                           command=command, progress=not args.no_progress)
    print(card_markdown(card), end="")
    print(f"written to {out}")
    return 0


def _lab_parser(sub) -> None:
    lab = _command(sub, "lab", "start JupyterLab on the notebooks, as make lab does: kernel 'mmkit' registered, "
                               "widgets extension checked, URL printed",
                   "Open 00_start_here first. Ctrl-C stops it.",
                   "  python -m mmkit lab\n  python -m mmkit lab --port 8890 -- --ServerApp.ip=0.0.0.0")
    lab.add_argument("--root", default="my-notebooks",
                     help="your working copy of the notebooks, served (default my-notebooks/, git-ignored): the shipped "
                          "ones are copied in at the first start, your edits are never overwritten; the package's own "
                          "folder (notebooks/, mmkit/notebooks) is refused")
    lab.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: the first free one from 8888)")
    lab.add_argument("--token", default=None, help="access token (default: a fresh random one, printed in the URL); "
                                                  "'' for none")
    lab.add_argument("--print-command", dest="print_command", action="store_true",
                     help="prepare and print the JupyterLab command line, do not start it")
    lab.add_argument("jupyter_args", nargs="*", metavar="-- JUPYTERLAB_OPTION", help="further JupyterLab options")


def _lab(args) -> int:
    from mmkit.app.browser import LabSetupError, start_lab

    try:
        start_lab(args.root, port=args.port, token=args.token, extra=args.jupyter_args, dry_run=args.print_command)
    except LabSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line: one subparser per command, every option with its help and default."""
    from mmkit.model.config import TrainConfig

    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m mmkit", description=DESCRIPTION + "\n\n" + _paragraphs(ABOUT),
                                     epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    b = _command(sub, "build-data", "build (or reuse) a dataset bundle: the embedded music21 triplets, or your own "
                                    "media with --from",
                 "Audio rendered with a General-MIDI soundfont, engraved score images, captions with musical "
                 "descriptors, all cached; the bundle goes to the cache, its card to --card.",
                 "  python -m mmkit build-data --preset tiny\n"
                 "  python -m mmkit build-data --from my-music/items.csv --out my-bundle --skip-bad")
    b.add_argument("--preset", choices=["tiny", "small", "full", "tiny-real", "small-real"], default="small",
                   help="tiny: 200 folk excerpts (56 s on 2 workers, used by the tests); small: 2,000 excerpts over "
                        "nine collections (476 s); full: every usable work, about 15,000; tiny-real / small-real: "
                        "the same works with 4 views per modality (soundfonts, tempo, reverb, noise; fonts, scan "
                        "degradation), captions at graded specificity and many-to-many truth (docs/data_format.md) "
                        "(default: small)")
    b.add_argument("--cache", default=None, help="cache directory (default: $MMKIT_CACHE or .cache/mmkit)")
    b.add_argument("--collections", nargs="+", help="only these music21 corpus collections, e.g. essenFolksong "
                                                    "(default: the preset's)")
    b.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    b.add_argument("--card", default=None,
                   help="dataset card path, '' to skip (default: reports/dataset_card.md for small, "
                        "reports/dataset_card_<preset>.md for the others)")
    b.add_argument("--no-progress", action="store_true", help="no progress bars")
    b.add_argument("--from", dest="source", metavar="ITEMS_CSV",
                   help="build from your own media instead: a CSV with id, audio, score, caption[, group, split] "
                        "(docs/your_data.md); needs --out; the card goes to OUT/card.md (default: none, build "
                        "--preset)")
    b.add_argument("--out", help="bundle directory written by --from (no default: required with --from)")
    b.add_argument("--skip-bad", dest="skip_bad", action="store_true",
                   help="--from: leave out bad rows (listed in the card) instead of stopping")
    b.add_argument("--render-audio", dest="render_audio", action="store_true",
                   help="--from: items with a symbolic score and no recording get the score rendered to audio")
    b.add_argument("--split-fractions", dest="split_fractions", type=_fractions, default=(0.8, 0.1, 0.1),
                   metavar="TRAIN,VAL,TEST", help="--from: shares of the splits assigned by group (default: 0.8,0.1,0.1)")
    imp = _command(sub, "import-features", "write a bundle from precomputed embeddings (.npy, .npz, Parquet)",
                   "Rows are aligned by position or joined by id; bad rows are named (docs/your_data.md).",
                   "  python -m mmkit import-features --out my-bundle --audio clap.npy --image clip.npy --ids ids.txt")
    imp.add_argument("--out", required=True, help="bundle directory to write")
    for m in ("audio", "image", "text"):
        imp.add_argument(f"--{m}", metavar="FILE[:KEY]",
                         help=f"{m} vectors: .npy, .npz[:key] or .parquet[:column]"
                              + (" ('captions': embed the captions with MiniLM)" if m == "text" else "")
                              + f" (default: none, the bundle has no {m})")
    imp.add_argument("--ids", metavar="FILE[:KEY]", help="ids, row-aligned: .txt, .npy, .npz:key, .parquet:column, "
                                                         ".csv:column (default: the id column of --items)")
    imp.add_argument("--captions", metavar="FILE[:KEY]", help="captions, row-aligned (same kinds of file as --ids; "
                                                              "default: those of --items, else none)")
    imp.add_argument("--splits", metavar="FILE[:KEY]", help="train/val/test per row (default: assigned by group)")
    imp.add_argument("--groups", metavar="FILE[:KEY]", help="groups kept in one split, per row (default: each row "
                                                            "its own group)")
    imp.add_argument("--items", metavar="ITEMS_CSV",
                     help="a build-data --from CSV joined by id: captions, groups, splits and media for the widget "
                          "(default: none)")
    imp.add_argument("--name", default=None, help="bundle name (default: the folder name)")
    imp.add_argument("--cache", default=None, help="cache for media and caption vectors (default: $MMKIT_CACHE or "
                                                   ".cache/mmkit)")
    imp.add_argument("--workers", type=int, default=None, help="processes for the media of --items (default: all cores)")
    imp.add_argument("--skip-bad", dest="skip_bad", action="store_true",
                     help="leave out bad rows (listed in the card) instead of stopping")
    imp.add_argument("--split-fractions", dest="split_fractions", type=_fractions, default=(0.8, 0.1, 0.1),
                     metavar="TRAIN,VAL,TEST", help="shares of the splits assigned by group (default: 0.8,0.1,0.1)")
    imp.add_argument("--no-progress", action="store_true", help="no progress bars")
    t = _command(sub, "train", "train one method with one seed into a run directory (resumable)",
                 "Options left out take the values of --config, else TrainConfig's defaults (shown below). "
                 "Under torchrun it trains data-parallel.",
                 "  python -m mmkit train --method proposed --data tiny --epochs 150 --batch-size 16 --seed 0 "
                 "--out runs/p0\n"
                 "  python -m mmkit train --method baseline --data my-bundle --out runs/b0 --tensorboard\n"
                 "  torchrun --nproc_per_node=2 -m mmkit train --method proposed --data small --out runs/ddp")
    t.add_argument("--method", choices=METHODS, help="proposed: L_C + lambda_s * L_S; baseline: L_C only; ls_only: "
                                                     "L_S only; pcme, pcmepp, mpc: the Gaussian competitors "
                                                     f"(default: {defaults.method})")
    t.add_argument("--data", "--preset", dest="data", default=None,
                   help="bundle directory or preset: tiny, small, full or synthetic (default: synthetic, a generated "
                        "demo bundle that is not music; the command says so before it starts)")
    t.add_argument("--cache", default=None, help="dataset cache directory (default: $MMKIT_CACHE or .cache/mmkit)")
    t.add_argument("--epochs", type=int, help=f"passes over the training split; the best epoch on val is kept "
                                              f"(default: {defaults.epochs})")
    t.add_argument("--seed", type=int, help=f"seed of initialisation, batches and vMF samples (default: {defaults.seed})")
    t.add_argument("--lambda-s", dest="lambda_s", type=_float_or_inf,
                   help=f"weight of L_S, the SSW loss between modalities; 'inf': L_S only (default: {defaults.lambda_s:g})")
    t.add_argument("--contrastive", choices=CONTRASTIVE_READINGS, help="reading of the contrastive loss L_C: infonce "
                                                                       "or pcme's soft matching (docs/method.md; "
                                                                       f"default: {defaults.contrastive})")
    t.add_argument("--dim", type=int, help=f"dimension d of the embedding space, the sphere S^(d-1) "
                                           f"(default: {defaults.dim})")
    t.add_argument("--batch-size", dest="batch_size", type=int,
                   help=f"triplets per step, also the negatives of L_C (default: {defaults.batch_size})")
    t.add_argument("--threads", type=int, help=f"torch intra-op threads per process (default: {defaults.threads})")
    t.add_argument("--encoder", choices=["heads", "backbones"],
                   help="heads over cached features, or CNN backbones over raw media and captions "
                        f"(default: {defaults.encoder})")
    t.add_argument("--config", type=argparse.FileType("r"), help="JSON file of TrainConfig fields, overridden by the "
                                                                 "options given (default: none)")
    t.add_argument("--out", required=True, help="run directory; re-running the same command resumes")
    t.add_argument("--tensorboard", action="store_true", help="also write TensorBoard scalars to OUT/tensorboard")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    e = _command(sub, "evaluate", "evaluate runs (one seed each) on every task their method supports",
                 "Prints R@1/5/10/15, MRR and MR as mean +- std over the runs and writes them to a CSV. Choose "
                 "settings on --split val; the test split is for the final numbers.",
                 "  python -m mmkit evaluate --runs runs/p0 runs/p1 runs/p2 --split val\n"
                 "  python -m mmkit evaluate --runs runs/p0 --distance kl --csv kl.csv")
    e.add_argument("--runs", nargs="+", required=True, help="run directories written by `train`")
    e.add_argument("--split", default="test", choices=SPLITS, help="the split whose items are queries and gallery "
                                                                   "(default: test)")
    e.add_argument("--distance", default="ssw", choices=DISTANCES,
                   help="ranking of the vMF methods: ssw (the paper's SSW_1 between vMF samples), kl, elk (expected "
                        "likelihood) or cosine of the means; PCME and MPC always rank by mean cosine, PCME++ by its "
                        "sampled distance (default: ssw)")
    e.add_argument("--fusion", default="product", choices=FUSIONS,
                   help="how a query of two modalities becomes one distribution (default: product)")
    e.add_argument("--samples", type=int, default=32, help="vMF samples per item for SSW (default: 32)")
    e.add_argument("--projections", type=int, default=50, help="SSW projections (default: 50)")
    e.add_argument("--csv", default=None, help="CSV path (default: <runs' parent>/evaluation_<split>.csv)")
    r = _command(sub, "reproduce", "run the notebooks (dataset, training, evaluation, figures) and write the results",
                 "Steps run by papermill in dependency order, unchanged ones skipped on a rerun.",
                 "  python -m mmkit reproduce --preset quick --readme docs/results.md    # = make reproduce\n"
                 "  python -m mmkit reproduce --preset smoke --data my-bundle",
                 "presets:\n" + "\n".join(textwrap.fill(text, 100, initial_indent=f"  {name:<7}", subsequent_indent=" " * 9)
                                          for name, text in PRESETS.items()))
    r.add_argument("--preset", choices=list(PRESETS), default="quick",
                   help=" ".join(f"{name}: {text}" for name, text in PRESETS.items()) + " (default: quick)")
    r.add_argument("--data", default=None, help="preset or bundle directory (default: the preset's)")
    r.add_argument("--cache", default=None, help="dataset cache (default: $MMKIT_CACHE or .cache/mmkit)")
    r.add_argument("--jobs", type=int, default=2, help="notebooks executed at a time (default: 2)")
    r.add_argument("--encoder", choices=["heads", "backbones"], default=None,
                   help="train heads over cached features or CNN backbones over raw inputs (default: the preset's, "
                        "heads)")
    r.add_argument("--force", action="store_true", help="re-run steps whose inputs are unchanged")
    r.add_argument("--runs-dir", dest="runs_dir", default=None,
                   help="training runs and executed notebooks (default: reports/runs for --preset quick on its "
                        "own data, else reports/<data>/<preset>/runs, git-ignored)")
    r.add_argument("--tables-dir", dest="tables_dir", default=None,
                   help="tables in md, tex and csv (default: reports/tables for --preset quick on its own data, else "
                        "reports/<data>/<preset>/tables, git-ignored)")
    r.add_argument("--figures-dir", dest="figures_dir", default=None,
                   help="figures in pdf, svg and png (default: reports/figures for --preset quick on its own "
                        "data, else reports/<data>/<preset>/figures, git-ignored)")
    r.add_argument("--readme", default=None, metavar="MARKDOWN",
                   help="Markdown file whose marked table blocks are refreshed from --tables-dir; make reproduce "
                        "passes docs/results.md (default: none)")
    st = _command(sub, "study", "the pre-registered study of docs/study.md: run the grid (skipping stored runs) "
                                "or --analyse an experiment once it is complete",
                  "", "  python -m mmkit study E1 --jobs 2\n  python -m mmkit study E1 --analyse\n"
                      "  python -m mmkit study --verdicts")
    st.add_argument("experiments", nargs="*", help="experiments to run (default: all), e.g. E1 E3")
    st.add_argument("--analyse", action="store_true", help="analyse the named experiments (refuses incomplete grids)")
    st.add_argument("--verdicts", action="store_true", help="print (and write to study_verdicts.md) the primary "
                                                             "verdicts of every experiment analysed so far, then the "
                                                             "validation score and the validation κ (mean, median, "
                                                             "CV, runs at kappa_max) of every stored run's cell")
    st.add_argument("--jobs", type=int, default=2, help="runs at a time, one torch thread each (default: 2)")
    st.add_argument("--executor", choices=["processes", "slurm", "local"], default="processes",
                    help="local processes, or submitit on Slurm ('local': submitit's local executor; "
                         "default: processes)")
    st.add_argument("--data", default="small", help="preset or bundle the study uses (default: small, as "
                                                    "docs/study.md fixes)")
    st.add_argument("--seeds", default=None, help="comma-separated subset of the seeds (default: the protocol's)")
    st.add_argument("--cache", default=None, help="dataset cache (default: $MMKIT_CACHE or .cache/mmkit)")
    st.add_argument("--store", default="reports/study", help="where the per-run JSON results go, committed "
                                                             "(default: reports/study)")
    st.add_argument("--work", default="reports/runs/study", help="training runs, git-ignored "
                                                                 "(default: reports/runs/study)")
    st.add_argument("--tables-dir", dest="tables_dir", default="reports/tables",
                    help="analysis tables (default: reports/tables)")
    st.add_argument("--figures-dir", dest="figures_dir", default="reports/figures",
                    help="analysis figures (default: reports/figures)")
    _search_kappa_parser(sub)
    _demo_runs_parser(sub)
    _lab_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    handler = {"build-data": _build_data, "train": _train, "evaluate": _evaluate, "reproduce": _reproduce,
               "study": _study}
    handler["import-features"] = _import_features
    handler["lab"] = _lab
    handler["search-kappa"] = _search_kappa
    handler["demo-runs"] = _demo_runs
    return handler[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
