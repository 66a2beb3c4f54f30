"""Render ``benchmarks/results/*.json`` as the tables of ``benchmarks.md`` at build time.

Each result file is matched by one renderer below (a file name pattern, a title, a
sentence saying what is measured), which picks the headline figures into a markdown
table and says which command reproduces the file; the page's
``<!-- benchmarks:tables -->`` line is replaced by them. A result file that no renderer
matches, or whose renderer fails on it, fails the build naming the file: a new benchmark
needs its renderer here, it is never left out silently.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

MARKER = "<!-- benchmarks:tables -->"
PAGE = "benchmarks.md"
RESULTS = Path("benchmarks") / "results"

Doc = dict[str, Any]


@dataclass(frozen=True)
class Renderer:
    pattern: re.Pattern[str]
    title: str
    what: str
    render: Callable[[re.Match[str], Doc], tuple[str, str]]
    """(command, markdown body) of one result file."""


RENDERERS: list[Renderer] = []


def renders(pattern: str, title: str, what: str):
    """Register the decorated function as the renderer of files named ``pattern``."""

    def register(function: Callable[[re.Match[str], Doc], tuple[str, str]]):
        RENDERERS.append(Renderer(re.compile(pattern + r"\.json"), title, what, function))
        return function

    return register


# --- the hook ---------------------------------------------------------------------------


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"docs/{PAGE} must hold the line {MARKER} (where the tables go)")
    repo = Path(config.config_file_path).parent
    return markdown.replace(MARKER, render_all(sorted((repo / RESULTS).glob("*.json"))))


def render_all(paths: Iterable[Path]) -> str:
    """Every result file as sections in the renderers' order; raises ``PluginError``."""
    by_renderer: dict[int, list[tuple[Path, re.Match[str]]]] = {}
    for path in paths:
        matches = [(i, r.pattern.fullmatch(path.name)) for i, r in enumerate(RENDERERS)]
        matches = [(i, m) for i, m in matches if m]
        if not matches:
            raise PluginError(
                f"{RESULTS / path.name}: no renderer in docs/hooks/benchmarks.py matches "
                "this result file; add one (a table of its headline figures and the command "
                "that writes it) so the benchmarks page shows it")
        by_renderer.setdefault(matches[0][0], []).append((path, matches[0][1]))
    sections = []
    for index in sorted(by_renderer):
        renderer = RENDERERS[index]
        parts = [f"## {renderer.title}", "", renderer.what, ""]
        group = by_renderer[index]
        for path, match in group:
            try:
                command, body = renderer.render(match, json.loads(path.read_text()))
            except Exception as error:  # noqa: BLE001 - any failure names the file
                raise PluginError(
                    f"{RESULTS / path.name}: its renderer ({renderer.render.__name__} in "
                    f"docs/hooks/benchmarks.py) failed: {type(error).__name__}: {error}; "
                    "update the renderer to the file's shape") from error
            if len(group) > 1:
                parts += [f"### `{path.name}`", ""]
            parts += [body.rstrip(), "", f"Reproduce (writes `{RESULTS / path.name}`):", "",
                      "```text", command, "```", ""]
        sections.append("\n".join(parts))
    return "\n".join(sections)


# --- formatting -------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"a row has {len(row)} cells for {len(headers)} columns")
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f}%"


def num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def py(script: str, *args: Any) -> str:
    return " ".join(["python", f"benchmarks/{script}", *(str(a) for a in args)])


# --- search -------------------------------------------------------------------------------


@renders(r"search-(?P<space>[a-z0-9]+)-(?P<device>.+)-(?P<evals>\d+)evals",
         "Search algorithms on NAS-Bench-201",
         "Each algorithm searches NAS-Bench-201's table for accuracy and one device's latency; "
         "the figure is the hypervolume gap to the table's true front (median over seeds, "
         "lower is better) at each checkpoint, and how many true-front cells were found.")
def _search(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    s = doc["settings"]
    by = {(r["algorithm"], r["evals"]): r for r in doc["summary"]}
    rows = []
    for algorithm in s["algorithms"]:
        name = algorithm if s["implementations"][algorithm] == algorithm else \
            f"{algorithm} ({s['implementations'][algorithm]})"
        gaps = [f"{by[algorithm, c]['hv_gap_median']:.4f}" for c in s["checkpoints"]]
        found = by[algorithm, s["checkpoints"][-1]]["true_front_found_median"]
        rows.append([name, *gaps, f"{found:g} of {s['true_front_size']}"])
    headers = ["algorithm", *(f"gap at {c}" for c in s["checkpoints"]), "true front found"]
    intro = (f"Device `{s['device']}`, {len(s['seeds'])} seeds, {s['evals']} evaluations, "
             f"accuracy `{s['dataset']}`.")
    # `default` names whichever algorithm was the default then; the command names what ran.
    ran = [s["implementations"][a] for a in s["algorithms"]]
    if ran != s["algorithms"]:
        intro += " The command names the algorithms that ran (`default` was the one in brackets)."
    command = (f"nas bench search --space {s['space']} --device {s['device']} --algorithms "
               f"{','.join(ran)} --evals {s['evals']} --seeds {len(s['seeds'])}")
    intro += "\n\n"
    return command, intro + table(headers, rows)


@renders(r"nb201_noise_limit-(?P<device>.+)", "How much of ehvi's gap is noise",
         "`ehvi` on NAS-Bench-201 with its learned predictors swapped for oracles (the "
         "table's true values) or for a model of the rest of the table: median hypervolume "
         "gap and true-front cells found.")
def _noise_limit(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    rows = [[variant, f"{gap:.4f}", f"{doc['true_front_found_median'][variant]:g} of "
             f"{doc['true_front_size']}"] for variant, gap in doc["hv_gap_median"].items()]
    command = py("bench_nb201_noise_limit.py", "--device", doc["device"], "--seeds",
                 doc["seeds"], "--evals", doc["evals"])
    return command, table(["search", "median gap", "true front found"], rows)


@renders(r"main_job_front", "The main job's front",
         "How much of `nas search --supernet hat --hw rpi4 --budget 50ms`'s front each "
         "algorithm finds: the hypervolume gap to the union of every run's front (lower is "
         "better).")
def _main_job(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    rows = [[g["algorithm"], g["evals"], f"{g['hv_gap']:.4f}", g["front_size"]]
            for g in doc["gaps"]]
    runs = ",".join(f"{r['algorithm']}:{r['evals']}" for r in doc["runs"])
    return (py("bench_main_job_front.py", "--runs", runs),
            table(["algorithm", "evaluations", "gap", "front size"], rows))


@renders(r"search_overhead", "The search loop's own cost",
         "A trivial evaluator leaves only the loop (ask/tell, cache, Pareto archive, "
         "storage): evaluations per second in the first and last tenth, and the loop's own "
         "overhead per evaluation. The `optuna` rows are Optuna's own loop, for scale.")
def _overhead(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    rows = [[r["runner"], r["algorithm"], r["storage"], r["evals"],
             r["evals_per_s_first_tenth"], r["evals_per_s_last_tenth"],
             r.get("loop_overhead_us"), r.get("algorithm_us")] for r in doc["runs"]]
    intro = (f"Median loop overhead {doc['summary']['median_loop_overhead_us']} µs per "
             "evaluation.\n\n")
    return py("bench_search_overhead.py"), intro + table(
        ["runner", "algorithm", "storage", "evaluations", "evals/s first tenth",
         "evals/s last tenth", "loop µs/eval", "algorithm µs/eval"], rows)


@renders(r"ofa_published", "OFA's published tables and predictor",
         "The `--space ofa-mbv3` search on OFA's Note10 latency tables and accuracy "
         "predictor: when it first reaches OFA's tutorial figure within the budget, with "
         "the SQLite study and without one.")
def _ofa_published(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    rows = []
    for run in doc["runs"]:
        study, bare = run["with_sqlite_study"], run["without_study"]
        first = study["first_at_target"]
        rows.append([study["seed"], first["evaluation"] if first else None,
                     num(first["seconds"], 2) if first else None,
                     num(study["best"]["accuracy"], 4), num(study["best"]["latency_ms"], 2),
                     num(bare["first_at_target"]["seconds"], 2)
                     if bare["first_at_target"] else None])
    intro = (f"Target accuracy {doc['target_accuracy']} within {doc['budget_ms']:g} ms, "
             f"`{doc['algorithm']}`, {doc['evals']:,} evaluations.\n\n")
    seeds = " ".join(str(run["with_sqlite_study"]["seed"]) for run in doc["runs"])
    command = py("bench_ofa_published.py", "--ofa-files", "PATH", "--algorithm",
                 doc["algorithm"], "--evals", doc["evals"], "--seeds", seeds)
    return command, intro + table(
        ["seed", "first at target (evaluation)", "seconds (study)", "best accuracy",
         "its latency ms", "seconds (no study)"], rows)


@renders(r"workers", "Many workers, one study",
         "The speedup of `nas search --workers N` over a search without workers, on "
         "evaluations that wait, that spin the CPU, and that cost nothing (the queue's own "
         "cost).")
def _workers(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    counts = sorted({int(k.split("_")[1]) for case in doc["cases"].values()
                     for k in case if k.startswith("workers_")})
    rows = []
    for name, case in doc["cases"].items():
        cells = []
        for n in counts:
            run = case.get(f"workers_{n}")
            cells.append(f"{run['seconds']:.2f} s ({run['speedup']:g}x)" if run else None)
        rows.append([name, case["evaluations"], f"{case['without_workers']['seconds']:.2f} s",
                     *cells])
    intro = f"Storage: {doc['storage']}, {doc['cores']} cores.\n\n"
    return py("bench_workers.py"), intro + table(
        ["evaluation", "evaluations", "no workers", *(f"{n} workers" for n in counts)], rows)


# --- latency and memory models -----------------------------------------------------------


@renders(r"latency_models_hat", "Latency models on HAT's measurements",
         "The default latency predictor of `rpi4`, `xeon` and `titanxp` against baselines "
         "on held-out rows of HAT's 2,000 measurements per device (median MAPE over seeds).")
def _latency_models(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    rows = [[f["device"], f["hardware"], f["rows"], pct(f["default_mape"], 2),
             f"{f['best_baseline']} {pct(f['best_baseline_mape'], 2)}",
             f["default_beats_best_baseline_seeds"], num(f["default_200_over_full"], 2)]
            for f in doc["files"]]
    return py("bench_latency_models.py"), table(
        ["target", "device", "rows", "default MAPE", "best baseline MAPE",
         "default wins (seeds)", "200 rows / all rows"], rows)


@renders(r"local_latency_model", "`local-cpu-model` on this CPU",
         "The structured latency model calibrated here against baselines, on held-out HAT "
         "subnets timed here, under the calibration's protocol (thread CPU time, fastest "
         "run) and `local-cpu`'s (wall clock, median).")
def _local_latency(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    fast, wall = doc["results"]["cpu-fastest"]["models"], doc["results"]["wall-median"]["models"]
    rows = [[model, pct(m["median_ape"]), pct(m["p90_ape"]), num(m["spearman"]),
             pct(wall[model]["median_ape"]) if model in wall else None]
            for model, m in fast.items()]
    intro = f"{doc['n']} subnets, {doc['train']} fit each model, {doc['heldout']} score it.\n\n"
    return (py("bench_local_latency_model.py", "--n", doc["n"], "--train", doc["train"],
               "--seed", doc["seed"]),
            intro + table(["model", "median APE", "p90 APE", "Spearman",
                           "median APE (wall median)"], rows))


@renders(r"fewshot_latency_nb201", "Few-shot latency on a new device",
         "K measured NAS-Bench-201 cells of a device the table holds out, every other cell "
         "predicted from the other four devices (`fewshot`), by the most correlated "
         "reference, or by the cell's encoding: median Spearman over seeds.")
def _fewshot(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    shots = sorted({r["shots"] for r in doc["results"]})
    by = {(r["device"], r["model"], r["shots"]): r for r in doc["results"]}
    keys = dict.fromkeys((r["device"], r["model"]) for r in doc["results"])
    rows = [[device, model, *(num(by[device, model, k]["median_spearman"])
                              if (device, model, k) in by else None for k in shots)]
            for device, model in keys]
    return py("bench_fewshot_latency.py"), table(
        ["device", "model", *(f"K={k}" for k in shots)], rows)


@renders(r"user_target_nb201", "Your own device from 20 measurements",
         "What `nas hw add` fits for a device outside the data (each NAS-Bench-201 device "
         "in turn), scored by Spearman on the pool's other cells: median (worst seed).")
def _user_target(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    laws = list(next(iter(doc["summary"].values())))
    rows = [[device, *(f"{by[law]['median']:.3f} ({by[law]['min']:.3f})" for law in laws)]
            for device, by in doc["summary"].items()]
    intro = f"{doc['shots']} measured cells of a pool of {doc['pool']}, {doc['seeds']} seeds.\n\n"
    return py("bench_user_target.py"), intro + table(["device", *laws], rows)


@renders(r"predictors_nb201", "Predictors on NAS-Bench-201",
         "Every predictor, fitted on a few cells, scored on the others: median over 10 "
         "seeds of Spearman, Kendall tau and MAPE. Latency MAPE runs to hundreds of percent "
         "because the cells' Raspberry Pi 4 latencies span 0.011 to 99 ms: a cell of "
         "almost no operations turns a small absolute error into a large relative one, so "
         "rank the latency predictors by Spearman.")
def _predictors(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    rows = [[r["target"], r["samples"], r["features"], r["log_target"], r["model"],
             num(r["median_spearman"]), num(r["median_kendall_tau"]),
             pct(r["median_mape"])] for r in doc["results"]]
    return py("bench_predictors.py"), table(
        ["target", "samples", "features", "log target", "model", "Spearman", "Kendall",
         "MAPE"], rows)


@renders(r"predictor_fewshot", "The default predictor with few measurements",
         "`nas predictor fit --model auto` against simple baselines on data it was not "
         "tuned on: Spearman on NAS-Bench-201's latency columns from 20 cells, and MAPE on "
         "HAT's latency files from 200 rows (median, worst seed in brackets).")
def _predictor_fewshot(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    nb = doc["nb201"]["per_device"]
    models = list(next(iter(nb.values())))

    def mm(v: Doc, f: Callable[[float], str]) -> str:
        return f"{f(v['median'])} ({f(v['min' if 'min' in v else 'max'])})"

    rows = [[device, *(mm(by[m], num) for m in models)] for device, by in nb.items()]
    files = doc["tables"]["per_file"]
    fmodels = list(next(iter(files.values())))
    frows = [[name, *(f"{pct(by[m]['median'], 2)} (worst {pct(by[m]['max'], 2)})"
                      for m in fmodels)] for name, by in files.items()]
    return py("bench_predictor_fewshot.py"), (
        table(["NAS-Bench-201 column (Spearman)", *models], rows) + "\n"
        + table(["HAT file (MAPE)", *fmodels], frows))


@renders(r"memory_model", "Peak memory from shapes",
         "Each family's memory model (weights plus the activation peak of the task's "
         "probe) against memory measured here, beside counting weights only.")
def _memory(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    rows = [[family, f["model"]["n"], pct(f["model"]["mape"], 2), pct(f["model"]["max_ape"], 2),
             pct(f["baseline_weights_only"]["mape"], 2),
             pct(f["baseline_weights_only"]["max_ape"], 2)]
            for family, f in doc["families"].items()]
    return py("bench_memory_model.py", "--samples", doc["samples"]), table(
        ["family", "subnets", "model MAPE", "model max APE", "weights-only MAPE",
         "weights-only max APE"], rows)


@renders(r"quant_latency_model", "Quantized latency model",
         "`local-cpu-model`'s int8 latency (fp32 model plus a fitted int8 delta) against "
         "measured int8 latencies of held-out HAT subnets, beside naive baselines.")
def _quant_latency(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    rows = [[name.replace("_", " "), pct(e["median_ape"]), pct(e["mape"]),
             num(e["kendall_tau"]), int(e["n"])] for name, e in doc["errors"].items()]
    return py("bench_quant_latency_model.py"), table(
        ["prediction vs measurement", "median APE", "MAPE", "Kendall", "subnets"], rows)


# --- supernets: slicing, extraction, training -----------------------------------------------


@renders(r"slicing_vs_dense", "Weight slicing vs the extracted subnet",
         "One validation pass through the supernet with the subnet activated against the "
         "extracted dense model, same process and threads.")
def _slicing(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    rows = [[r["config"], num(r["sliced_s"]), num(r["dense_s"]),
             num(r["ratio_sliced_over_dense"], 2)] for r in doc["rows"]]
    intro = f"Median ratio {doc['median_ratio']:.2f}; {doc['examples']:,} examples.\n\n"
    return (py("bench_slicing_vs_dense.py", "--repeats", doc["repeats"], "--limit",
               doc["examples"], "--threads", doc["threads"]),
            intro + table(["subnet", "sliced s", "dense s", "sliced / dense"], rows))


@renders(r"ofa", "OFA on digits",
         "Forward time through the OFA supernet vs the extracted subnet, and accuracy of "
         "subnets from progressive shrinking (PS) vs the same architectures trained alone.")
def _ofa(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    rows = [[r["subnet"], r["params"], num(r["batch1"]["ratio_supernet_over_dense"], 2),
             num(r["batch256"]["ratio_supernet_over_dense"], 2),
             pct(r["ps_test_accuracy"]), pct(r["alone_test_accuracy"])] for r in doc["rows"]]
    return py("bench_ofa.py", "--repeats", doc["repeats"], "--threads", doc["threads"]), table(
        ["subnet", "params", "supernet / dense, batch 1", "batch 256", "test acc. (PS)",
         "test acc. (alone)"], rows)


@renders(r"sortednet", "SortedNet on digits",
         "The sorted MLP's sub-models: batch-1 forward through the supernet vs extracted, "
         "and held-out accuracy extracted from SortedNet training vs trained alone.")
def _sortednet(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    rows = [[s["config"], s["width"], s["depth"], s["params"],
             num(s["batch1_forward_us"]["ratio_sliced_over_dense"], 2),
             pct(s["held_out"]["extracted_from_sortednet"]["accuracy"]),
             pct(s["held_out"]["trained_alone"]["accuracy"])] for s in doc["subnets"]]
    prop = doc["property"]
    intro = (f"Loss never rises with width (tolerance {prop['loss_tolerance']}): "
             f"{cell(prop['loss_non_increasing_with_width'])}.\n\n")
    return (py("bench_sortednet.py", "--seeds", doc["seeds"], "--repeats", doc["repeats"],
               "--threads", doc["threads"]),
            intro + table(["sub-model", "width", "depth", "params", "sliced / dense",
                           "accuracy (SortedNet)", "accuracy (alone)"], rows))


@renders(r"matformer", "MatFormer on pydoc-lm",
         "Slicing vs dense speed, the jointly trained nested FFNs vs the same models trained "
         "alone, and each granularity vs a slice of an XL-only model (next-byte accuracy on "
         "the validation split).")
def _matformer(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    speed = {s["subnet"]: s for s in doc["speed"]}
    rows = [[a["subnet"], speed[a["subnet"]]["params"],
             num(speed[a["subnet"]]["ratio_sliced_over_dense"], 2),
             pct(a["joint"]["accuracy"]), pct(a["alone"]["accuracy"])] for a in doc["accuracy"]]
    grows = [[g["granularity"], g["ffn_dim"], g["params"], pct(g["joint_accuracy"]),
              pct(g["xl_only_slice_accuracy"])] for g in doc["granularities"]]
    return py("bench_matformer.py", "--repeats", doc["repeats"]), (
        table(["subnet", "params", "sliced / dense", "accuracy (joint)", "accuracy (alone)"],
              rows) + "\n"
        + table(["granularity", "FFN width", "params", "accuracy (joint)",
                 "accuracy (XL-only slice)"], grows))


@renders(r"flexibert", "FlexiBERT",
         "Weight slicing vs the extracted model (batch 1, 64 tokens), and fidelity to "
         "MiniLM (cosine) of subnets from the shared supernet vs trained alone.")
def _flexibert(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    rows = [[r["subnet"], r["params"], num(r["activate_ms"], 2), num(r["supernet_forward_ms"], 2),
             num(r["dense_forward_ms"], 2), num(r["cosine_supernet_trained"]),
             num(r["cosine_trained_alone"])] for r in doc["rows"]]
    return py("bench_flexibert.py", "--threads", doc["threads"]), table(
        ["subnet", "params", "activate ms", "supernet forward ms", "dense forward ms",
         "cosine (supernet)", "cosine (alone)"], rows)


@renders(r"training_scale", "Training at scale",
         "The training loop's step time with one or two ranks (DDP over Gloo) and threads, "
         "for the HAT and OFA zoo recipes.")
def _training_scale(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    rows = []
    for name, s in doc["supernets"].items():
        for label, r in s["runs"].items():
            rows.append([name, label, r["batch_size"], num(r["step_s"]),
                         num(r["samples_per_s"], 1), num(r["allreduce_ms"], 1)])
    resume = doc["resume"]
    intro = (f"{doc['cores']} cores, {doc['timed_steps']} timed steps. Resuming reads "
             f"{resume['state_mb']:.1f} MB of state in {resume['read_state_s']:.3f} s.\n\n")
    return py("bench_training_scale.py"), intro + table(
        ["supernet", "run", "batch", "step s", "samples/s", "all-reduce ms"], rows)


# --- compression and quantization ------------------------------------------------------------


@renders(r"compress_latency", "Latency model for pruning",
         "The structured latency model of a `DenseTransformer` (per call, block and MAC) "
         "on held-out shapes, against latency proportional to MACs.")
def _compress_latency(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    rows = [[name, pct(r["structured"]["heldout"]["median_ape"]),
             num(r["structured"]["heldout"]["spearman"]),
             pct(r["macs_proportional"]["heldout"]["median_ape"]),
             num(r["macs_proportional"]["heldout"]["spearman"]),
             f"{r['full_model_real_weights']['predicted_ms']:.2f} / "
             f"{r['full_model_real_weights']['measured_ms']:.2f}"]
            for name, r in doc["results"].items()]
    return py("bench_compress_latency.py", "--samples", doc["samples"], "--seed", doc["seed"]), \
        table(["model", "structured median APE", "structured Spearman", "MACs median APE",
               "MACs Spearman", "full model predicted / measured ms"], rows)


@renders(r"compress_matformer", "Compressing MatFormer",
         "The shipped MatFormer XL pruned (NViT, Hessian or magnitude saliency) to the size "
         "of its best small Mix'n'Match subnet and to half its latency: validation loss "
         "(nats per byte) and next-byte accuracy.")
def _compress_matformer(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    xl, mix = doc["xl"], doc["mix_n_match_best_under_half"]
    rows = [["XL (source)", xl["params"], num(xl["loss"]), pct(xl["accuracy"])],
            ["best Mix'n'Match under half", mix["params"], num(mix["loss"]), pct(mix["accuracy"])]]
    for criterion, r in doc["prune_to_mix_n_match_size"].items():
        rows.append([f"{criterion}, one shot", mix["params"], num(r["one_shot_loss_mean"]),
                     pct(r["one_shot_accuracy_mean"])])
        rows.append([f"{criterion}, distilled", mix["params"], num(r["distilled_loss_mean"]),
                     pct(r["distilled_accuracy_mean"])])
    half = doc["prune_to_half_latency"]
    rows.append([f"half latency ({half['pruned_measured_ms']:.2f} of "
                 f"{half['source_measured_ms']:.2f} ms measured)", half["pruned_params"],
                 num(half["loss"]), pct(half["accuracy"])])
    sub = doc["subclone_2x64"]
    return (py("bench_compress_matformer.py", "--seeds", len(sub["runs"]), "--train-steps",
               sub["train_steps"]),
            table(["model", "params", "loss", "accuracy"], rows))


@renders(r"prune_minilm", "Pruning MiniLM to half",
         "all-MiniLM-L6-v2 pruned to half its parameters (counting all of them, or the "
         "encoder's), Hessian vs magnitude saliency: cosine to the dense model's sentence "
         "embeddings, one shot and after a short distillation (mean over seeds).")
def _prune_minilm(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    rows = [[key, round(m["params_all"]), round(m["params_encoder"]),
             num(m["cosine_one_shot_no_distillation"]), num(m["cosine"])]
            for key, m in doc["mean"].items()]
    b = doc["budget"]
    command = py("bench_prune_minilm.py", "--steps", b["steps"], "--distil-steps",
                 b["distil_steps_per_step"], "--saliency-batches", b["saliency_batches_per_step"],
                 "--saliency-batch", b["saliency_batch"], "--batch", b["batch"], "--lr", b["lr"],
                 "--seeds", b["seeds"])
    return command, table(["counted / criterion", "params (all)", "params (encoder)",
                           "cosine one shot", "cosine distilled"], rows)


@renders(r"subclone_minilm", "Subcloning MiniLM",
         "Weight subcloning of MiniLM to about half its size against random neurons and "
         "random initialisation: cosine to MiniLM before and after the same distillation.")
def _subclone(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    rows = [[*key.split("/"), num(m["cosine_step0"]), num(m["cosine_final"])]
            for key, m in doc["mean"].items()]
    b = doc["budget"]
    command = py("bench_subclone_minilm.py", "--steps", b["distil_steps"], "--batch", b["batch"],
                 "--lr", b["lr"], "--calibration-batches", b["calibration_batches"],
                 "--seeds", b["seeds"])
    return command, table(["target", "initialisation", "cosine at step 0", "cosine after"],
                          rows)


@renders(r"moe_merge", "Merging experts",
         "The zoo's MoE byte LM (8 experts per layer) merged to 6 and 4 experts per layer by "
         "each method and allocation: validation loss and accuracy (median over seeds), "
         "accuracy retained relative to the source.")
def _moe(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    rows = [[t["experts_per_layer"], t["method"], t["allocation"], num(t["loss_median"]),
             pct(t["accuracy_median"]), pct(t["accuracy_retention_median"]),
             round(t["tokens_per_s_median"])] for t in doc["summary"]["table"].values()]
    source = doc["source"]
    intro = (f"Source: loss {source['loss']:.3f}, accuracy {pct(source['accuracy'])}, "
             f"{source['params']:,} parameters.\n\n")
    experts = sorted({r["experts_per_layer_target"] for r in doc["runs"]}, reverse=True)
    command = py("bench_moe_merge.py", "--seeds", len(doc["summary"]["seeds"]), "--experts",
                 *experts)
    return command, intro + table(
        ["experts/layer", "method", "allocation", "loss", "accuracy", "retained", "tokens/s"],
        rows)


@renders(r"mamba_shed", "Mamba-Shedder",
         "Removing k blocks or SSMs of the zoo's Mamba-2 byte LM, greedy (Mamba-Shedder) vs "
         "random choices: validation perplexity (median over seeds) and the measured speedup.")
def _mamba(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    speed = {(t["kind"], t["k"]): t["speedup"] for t in doc["timing"]}
    groups: dict[tuple[str, int], list[Doc]] = {}
    for run in doc["runs"]:
        groups.setdefault((run["kind"], run["k"]), []).append(run)
    rows = [[kind, k, pct(statistics.median(r["params_fraction"] for r in runs), 0),
             num(statistics.median(r["greedy"]["perplexity"] for r in runs), 2),
             num(statistics.median(r["random_perplexity_median"] for r in runs), 2),
             f"{sum(r['greedy_beats_random_median'] for r in runs)} of {len(runs)}",
             f"{speed[kind, k]:.2f}x" if (kind, k) in speed else None]
            for (kind, k), runs in groups.items()]
    intro = f"Source perplexity {doc['source']['perplexity']:.2f}.\n\n"
    seeds = len({r["seed"] for r in doc["runs"]})
    command = py("bench_mamba_shed.py", "--seeds", seeds, "--random",
                 doc["random"]["subsets_per_seed"], "--recover-steps",
                 doc["recovery_recipe"]["steps"], "--timing-rounds",
                 doc["timing_protocol"]["rounds"])
    return command, intro + table(
        ["removed", "k", "params left", "greedy perplexity", "random perplexity",
         "greedy wins (seeds)", "speedup"], rows)


@renders(r"untrusted_load", "Refusing a tampered export",
         "An export whose config claims ever wider layers: building the model it describes "
         "against `load_subnet`'s check, which refuses it before allocating anything.")
def _untrusted(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    rows = [[r["factor"], num(r["baseline_build"]["seconds"]),
             num(r["baseline_build"]["peak_growth_mb"], 1), num(r["checked_load"]["seconds"]),
             num(r["checked_load"]["peak_growth_mb"], 2),
             r["checked_load"]["outcome"].split(":")[0]] for r in doc["rows"]]
    factors = ",".join(str(r["factor"]) for r in doc["rows"])
    return py("bench_untrusted_load.py", "--factors", factors), table(
        ["FFN width x", "build s", "build peak MB", "checked load s", "checked peak MB",
         "outcome"], rows)


@renders(r"quant_uniform", "Uniform int8",
         "Every family's largest and smallest subnet in fp32, fake-quantized int8 and on "
         "torch's real int8 kernels: accuracy, size and `local-cpu` latency.")
def _quant_uniform(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    rows = [[name, pct(s["accuracy_fp32"], 2), pct(s["accuracy_fake_int8"], 2),
             pct(s["accuracy_real_int8"], 2), pct(s["relative_drop"], 2),
             f"{s['size_mb_fp32']:.2f} → {s['size_mb_int8']:.2f}",
             f"{s['latency_ms_fp32']:.2f} → {s['latency_ms_int8']:.2f}"]
            for name, s in doc["subnets"].items()]
    return py("bench_quant_uniform.py"), table(
        ["subnet", "fp32", "fake int8", "real int8", "relative drop", "size MB",
         "latency ms"], rows)


@renders(r"quant_sensitivity", "HAWQ sensitivity",
         "HAWQ's cheap per-unit sensitivity against the measured damage of quantizing each "
         "unit alone, in Spearman over units (the largest subnet of each family).")
def _quant_sensitivity(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    rows = [[family, bits, f["units"], num(b["spearman_vs_loss_increase"]),
             num(b["spearman_vs_accuracy_drop"])]
            for family, f in doc["families"].items() for bits, b in f["bits"].items()]
    return py("bench_quant_sensitivity.py"), table(
        ["family", "bits", "units", "Spearman vs loss increase", "vs accuracy drop"], rows)


@renders(r"quant_joint-(?P<evals>\d+)evals", "Joint bits and architecture search",
         "SimQ-NAS's joint search against an fp32 search quantized afterwards (uniform int8, "
         "or HAWQ-V3's integer program): median hypervolume at equal evaluations.")
def _quant_joint(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    rows = [[family, f"{f['budget_ms']:g}", num(f["median"]["hv_joint_at_int8_evals"]),
             num(f["median"]["hv_fp32_then_int8"]), num(f["median"]["hv_joint_at_milp_evals"]),
             num(f["median"]["hv_fp32_then_milp"]), f["joint_beats_int8"],
             f["joint_beats_milp"]] for family, f in doc["families"].items()]
    return (py("bench_quant_joint.py", "--evals", doc["evals"], "--seeds", doc["seeds"],
               "--families", ",".join(doc["families"])),
            table(["family", "budget ms", "joint", "fp32 + int8", "joint (MILP evals)",
                   "fp32 + MILP", "joint wins vs int8", "vs MILP"], rows))


@renders(r"quant_gemm", "Weight-only GEMMs on a GPU",
         "Triton's weight-only int8 and int4 GEMMs against the fp16 matmul at decode shapes.")
def _quant_gemm(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    if not doc["status"].startswith("not run"):
        raise ValueError("the file holds GPU timings, which this renderer does not show yet")
    check = doc["cpu_interpreter_check"]
    intro = (f"Status: {doc['status']}. The kernels were checked in Triton's CPU "
             f"interpreter ({check['status']}).\n\n")
    rows = [["weight bytes", *(f"{doc['weight_bytes'][k]:,}" for k in ("fp16", "int8", "int4"))],
            ["max relative error (interpreter)", None, f"{check['int8_max_rel_error']:.2g}",
             f"{check['int4_max_rel_error']:.2g}"]]
    return py("bench_quant_gemm.py"), intro + table(["", "fp16", "int8", "int4"], rows)


# --- install and start-up -----------------------------------------------------------------


@renders(r"install", "The default install and the command line's start-up",
         "Two clean venvs side by side: the default install against the install as it was "
         "before numba, pandas, pyarrow, plotly and optuna-dashboard became extras; then the "
         "CPU seconds of `nas --help` against the same help with the library imported up "
         "front, as every command paid before its imports were made lazy.")
def _install(match: re.Match[str], doc: Doc) -> tuple[str, str]:
    rows = [[name, doc[key]["package_seconds"], doc[key]["torch_seconds"],
             doc[key]["venv_mb"], doc[key]["distributions"]]
            for name, key in (("default", "default"),
                              (f"before (`[{doc['before']['extras']}]`)", "before"))]
    cpu = doc["cli_cpu_seconds"]
    startup = table(["command", "CPU seconds"], [
        ["`nas --help`", cpu["help_seconds"]],
        ["`nas search --help`", cpu["search_help_seconds"]],
        ["`nas --help`, library imported up front", cpu["eager_help_seconds"]]])
    return py("bench_install.py"), table(
        ["install", "package s", "torch s", "venv MB", "distributions"], rows) + "\n" + startup
