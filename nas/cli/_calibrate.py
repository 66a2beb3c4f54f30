"""``nas hw calibrate``: fit a hardware target's latency model on measurements made here."""

from __future__ import annotations

from typing import Any

import typer

from nas.cli._common import (
    JSON_HELP,
    configure_logging,
    console,
    force_option,
    print_json,
    user_errors,
)


@user_errors
def calibrate(
    target: str = typer.Argument(..., help="The target to calibrate: local-cpu-model."),
    samples: int = typer.Option(80, "--samples", min=8, help="Random subnets to measure "
                                "(a quarter is held out to state the error)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the subnets and the held-out split."),
    supernet: str = typer.Option("hat", "--supernet", help="HAT-family supernet whose "
                                 "space is calibrated (see `nas supernets list`)."),
    quantized: bool = typer.Option(False, "--quantized", help="Also time each subnet under "
                                   "a random fp32/int8 policy on the int8 kernels and fit "
                                   "the quantized latency model (`--quantize` on this "
                                   "target); about twice as long."),
    force: bool = force_option("Replace this machine's existing calibration."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every subnet's figures."),
) -> None:
    """Measure SAMPLES random subnets of SUPERNET on this CPU (one thread), fit TARGET's
    per-layer latency model on them and save it in the user cache ($NAS_CACHE or
    ~/.cache/nas/), with this machine's fingerprint and the held-out error.

    Under a second per subnet. Run it on a machine as idle as you can make it.
    """
    from nas._files import check_output
    from nas._supernet import SUPERNETS, get_supernet
    from nas._task import get_task
    from nas.hardware._local_model import (
        TARGET_NAME,
        calibrate_local,
        calibration_path,
        save_calibration,
    )

    configure_logging(verbose)
    if target != TARGET_NAME:
        raise ValueError(f"target must be one of ['{TARGET_NAME}'] (the targets calibrated "
                         f"here), got {target!r}")
    SUPERNETS.entry(supernet)  # unknown names fail here, before anything is loaded
    path = calibration_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    check_output(path, kind="file", force=force, option="the calibration")
    net = get_supernet(supernet)
    if net.task_name is None:
        raise ValueError(f"supernet {supernet!r} records no task to take a latency probe from")
    calibration = calibrate_local(net, get_task(net.task_name), n=samples, seed=seed,
                                  quantized=quantized,
                                  progress=not json_output or console.is_terminal)
    check_output(path, kind="file", force=force, option="the calibration")
    save_calibration(calibration, path)
    document: dict[str, Any] = {"path": str(path), **calibration.to_dict()}
    if json_output:
        print_json(document)
        return
    e = calibration.heldout
    console.print(
        f"{TARGET_NAME}: fitted on {calibration.n} subnets of {calibration.space}; on the "
        f"{int(e['n'])} held out, median error {e['median_ape']:.1%}, MAPE {e['mape']:.1%}, "
        f"Kendall tau {e['kendall_tau']:.2f}; wrote {path}",
        highlight=False, soft_wrap=True,
    )
    if calibration.quantized is not None:
        q = calibration.quantized.heldout
        console.print(f"quantized (int8 kernels): on the {int(q['n'])} held out, MAPE "
                      f"{q['mape']:.1%}, Kendall tau {q['kendall_tau']:.2f}", highlight=False)
