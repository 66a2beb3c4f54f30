"""``nas compress``: turn a pretrained encoder into a smaller deployable one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from nas.cli._common import JSON_HELP, configure_logging, console, print_json, user_errors

app = typer.Typer(help="Compress a model (pruning, subcloning, expert merging, Mamba-Shedder) "
                  "into a deployable export.",
                  no_args_is_help=True)

MODEL_HELP = ("'minilm' (the pretrained all-MiniLM-L6-v2); 'matformer', 'flexibert-minilm' or "
              "'hat' (that supernet's largest subnet); or a folder written by nas export (a "
              "MatFormer, all-attention FlexiBERT or HAT subnet) or by nas compress.")
FORCE_HELP = "Replace an export already in OUT."
LM_MODEL_HELP = ("A zoo name ({zoo}) or a folder written by nas export or nas compress holding "
                 "a {family} model.")
CALIBRATION_HELP = "Random pydoc-lm train windows (64 bytes) to calibrate on."


@app.command("prune")
@user_errors
def prune(
    model: str = typer.Option("minilm", "--model", help=MODEL_HELP),
    out: Path = typer.Option(..., "--out", help="Folder to write the export into."),
    target_params: float | None = typer.Option(
        None, "--target-params", help="Fraction of the parameters to keep, in (0, 1]."
    ),
    target_macs: float | None = typer.Option(
        None, "--target-macs",
        help="Fraction of the MACs (at --tokens) to keep, in (0, 1]; FLOPs are 2 x MACs, so "
        "this is also the fraction of FLOPs.",
    ),
    target_latency: str | None = typer.Option(
        None, "--target-latency",
        help="Latency to reach on --hw at --tokens, e.g. 5ms (a latency model is "
        "calibrated on the source first and its held-out error reported).",
    ),
    hw: str = typer.Option(
        "local-cpu", "--hw",
        help="Where latency counts: local-cpu or cuda (measured), or for a HAT subnet rpi4, "
        "xeon or titanxp (HAT's device models, as the search prices it)."),
    tokens: int = typer.Option(64, "--tokens", help="Sequence length for MACs and latency."),
    eta: float = typer.Option(
        0.0, "--eta", help="NViT's latency-aware term: scores minus eta x the ms a unit saves."
    ),
    count: str = typer.Option(
        "all", "--count", help="Parameters --target-params counts: all, or encoder (blocks)."
    ),
    criterion: str = typer.Option("hessian", "--criterion", help="hessian (NViT) or magnitude."),
    groups: str = typer.Option(
        "units", "--groups",
        help="units (one at a time) or nvit (NViT's groups: 2 heads, 8 query/key or value "
        "dims, 16 FFN units or embedding dims, keeping widths multiples of those).",
    ),
    steps: int = typer.Option(4, "--steps", min=1, help="Pruning steps."),
    distil_steps: int = typer.Option(
        30, "--distil-steps", min=0, help="Distillation steps after each pruning step."
    ),
    saliency_batches: int = typer.Option(
        64, "--saliency-batches", min=1,
        help="Batches of 4 training examples each saliency estimate averages over."),
    lr: float = typer.Option(
        1e-4, "--lr",
        help="AdamW learning rate of the distillation (a model trained from scratch on its "
        "task, such as a HAT subnet, recovers faster near its training rate)."),
    seed: int = typer.Option(0, "--seed", help="Seed of batches and saliency probes."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Global structural pruning with Hessian-aware saliency (NViT) to a parameter, MAC or
    latency budget, distilling from the original after every step; the export loads with
    nas.load_subnet(OUT)."""
    from nas._units import parse_latency_ms
    from nas.compress._jobs import Budget, prune_job

    configure_logging(verbose)
    latency_ms = parse_latency_ms(target_latency) if target_latency is not None else None
    budget = Budget(params=target_params, macs=target_macs, latency_ms=latency_ms,
                    count=count, hw=hw, tokens=tokens)
    summary = prune_job(model, out, budget=budget, criterion=criterion, groups=groups, eta=eta,
                        steps=steps, distil_steps=distil_steps, lr=lr, seed=seed,
                        saliency_batches=saliency_batches, overwrite=force)
    _report(summary, json_output)


@app.command("subclone")
@user_errors
def subclone(
    model: str = typer.Option("minilm", "--model", help=MODEL_HELP),
    layers: int = typer.Option(..., "--layers", min=1, help="Blocks of the smaller model."),
    hidden: int = typer.Option(..., "--hidden", min=1, help="Its embedding width."),
    ffn: int | None = typer.Option(
        None, "--ffn", min=1, help="Its FFN width (default: the source's, scaled by width)."
    ),
    heads: int | None = typer.Option(
        None, "--heads", min=1, help="Its heads (default: the source's head width kept)."
    ),
    out: Path = typer.Option(..., "--out", help="Folder to write the export into."),
    distil_steps: int = typer.Option(
        150, "--distil-steps", min=0, help="Distillation steps after subcloning."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the training batches."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Weight subcloning: initialise a smaller model from the source (neurons ranked by
    activation, blocks that change the stream least removed, LayerNorms rescaled), then
    distil; the export loads with nas.load_subnet(OUT)."""
    from nas.compress._jobs import subclone_job

    configure_logging(verbose)
    summary = subclone_job(model, out, layers=layers, hidden=hidden, ffn=ffn, heads=heads,
                           distil_steps=distil_steps, seed=seed, overwrite=force)
    _report(summary, json_output)


@app.command("merge-experts")
@user_errors
def merge_experts(
    model: str = typer.Option(..., "--model",
                              help=LM_MODEL_HELP.format(zoo="moe-pydoc", family="moe-lm")),
    experts: int = typer.Option(..., "--experts",
                                help="Experts to keep per layer on average (N x layers in "
                                "total; the method spreads them over the layers)."),
    method: str = typer.Option(
        "sub-moe", "--method",
        help="sub-moe (Sub-MoE: K-means on output similarity, shared-subspace merge), hc-smoe, "
        "freq-avg, prune (most-routed), naee or random."),
    rank: int | None = typer.Option(
        None, "--rank", help="Store each merged expert's matrices at this rank (default dense)."),
    calibration_windows: int = typer.Option(32, "--calibration-windows",
                                            help=CALIBRATION_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of the windows and the grouping."),
    out: Path = typer.Option(..., "--out", help="Folder to write the export into."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Merge a mixture-of-experts LM's experts (Sub-MoE or a baseline) down to --experts;
    prints held-out loss, parameters and CPU latency before and after. The export loads
    with nas.load_subnet(OUT), with model.onnx where the graph exports."""
    from nas.compress._experts_job import merge_experts_job

    configure_logging(verbose)
    summary = merge_experts_job(model, out, experts=experts, method=method, rank=rank,
                                calibration_windows=calibration_windows, seed=seed,
                                overwrite=force)
    _report_lm(summary, json_output,
               f"{summary['experts_before']} -> {summary['experts_after']} experts "
               f"({summary['method']})")


@app.command("shed")
@user_errors
def shed(
    model: str = typer.Option(..., "--model",
                              help=LM_MODEL_HELP.format(zoo="mamba-pydoc", family="mamba-lm")),
    remove: str | None = typer.Option(
        None, "--remove",
        help="Structures to remove, e.g. blocks:2,ssm:4 (with a target: the most to remove)."),
    target_latency: str | None = typer.Option(
        None, "--target-latency",
        help="CPU latency to reach at batch 1, e.g. 5ms (a latency model is calibrated "
        "first; predicted and measured ms are reported)."),
    target_params: float | None = typer.Option(
        None, "--target-params", help="Fraction of the parameters to keep, in (0, 1]."),
    recover_steps: int = typer.Option(0, "--recover-steps",
                                      help="Fine-tuning steps after removal (0: none)."),
    calibration_windows: int = typer.Option(32, "--calibration-windows",
                                            help=CALIBRATION_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed of the windows and of recovery."),
    out: Path = typer.Option(..., "--out", help="Folder to write the export into."),
    force: bool = typer.Option(False, "--force", help=FORCE_HELP),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Mamba-Shedder: remove Mamba-2 blocks and SSMs greedily by calibration loss (blocks
    first), to counts, a parameter fraction or a CPU latency; optionally recover. The
    export loads with nas.load_subnet(OUT), with model.onnx."""
    from nas._units import parse_latency_ms
    from nas.compress._shed_job import ShedRequest, shed_job

    configure_logging(verbose)
    latency_ms = parse_latency_ms(target_latency) if target_latency is not None else None
    request = ShedRequest(remove=remove, params=target_params, latency_ms=latency_ms)
    summary = shed_job(model, out, request=request, recover_steps=recover_steps,
                       calibration_windows=calibration_windows, seed=seed, overwrite=force)
    what = f"removed {', '.join(summary['removed'])}"
    if "recovery" in summary:
        what += (f", {summary['recovery']['steps']} recovery steps (held-out loss "
                 f"{summary['loss_before_recovery']:.3f} before them)")
    _report_lm(summary, json_output, what)


def _report_lm(summary: dict[str, Any], json_output: bool, what: str) -> None:
    """One paragraph for the byte-LM commands (or the summary as JSON)."""
    if json_output:
        print_json(summary)
        return
    timing = summary["timing"]
    lines = [
        f"wrote {summary['out']}: {what}",
        f"  parameters {summary['params_before']:,} -> {summary['params_after']:,} "
        f"({summary['params_fraction']:.1%})",
        f"  held-out loss {summary['loss_before']:.4f} -> {summary['loss_after']:.4f} nats/byte "
        f"({summary['eval']['windows']} validation windows of {summary['eval']['length']} "
        f"bytes)",
        f"  CPU latency {summary['ms_before']:.2f} -> {summary['ms_after']:.2f} ms (batch 1, "
        f"{timing['length']} bytes, one thread, median)",
    ]
    latency = summary.get("latency")
    if latency:
        lines.append(f"  budget {latency['budget_ms']:g} ms: {latency['predicted_ms']:.2f} ms "
                     f"predicted, {latency['measured_ms']:.2f} ms measured (latency model "
                     f"held-out error {latency['heldout_median_ape']:.1%})")
    onnx = summary["onnx"]
    lines.append(f"  ONNX: {onnx['file']} (checked with {onnx['checked_with']}, max diff "
                 f"{onnx['max_abs_diff']:.1e})" if isinstance(onnx, dict) else f"  ONNX: {onnx}")
    console.print("\n".join(lines), highlight=False, soft_wrap=True)


def _report(summary: dict[str, Any], json_output: bool) -> None:
    if json_output:
        print_json(summary)
        return
    params, metric = summary["params"], summary["metric"]
    score, shape = summary["score"], summary["shape"]
    width = (f"embedding width {shape['embed_dim']}" if "embed_dim" in shape else
             f"embedding widths {shape['encoder_dim']} / {shape['decoder_dim']}")
    line = (f"wrote {summary['out']}: {params['compressed']:,} parameters "
            f"({params['fraction']:.1%} of {params['original']:,}), {width}, "
            f"{metric} {score['compressed'][metric]:.3f} "
            f"(source {score['source'][metric]:.3f}), {summary['wall_s']:.0f} s")
    latency = summary.get("latency")
    if latency and "source_predicted_ms" in latency:
        line += (f"; latency on {latency['hw']} {latency['predicted_ms']:.2f} ms predicted "
                 f"(source {latency['source_predicted_ms']:.2f} ms; the device model's "
                 f"held-out MAPE on HAT's measurements {latency['heldout_mape']:.1%})")
    elif latency:
        line += (f"; latency on {latency['hw']} {latency['measured_ms']:.2f} ms measured, "
                 f"{latency['predicted_ms']:.2f} ms predicted (model error "
                 f"{latency['heldout_median_ape']:.1%} held out)")
    console.print(line, highlight=False)
