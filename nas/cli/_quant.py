"""``nas quant``: HAWQ sensitivities of a subnet's units and their bit allocation."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from nas.cli._common import JSON_HELP, OneLineErrors, console, print_json, user_errors

app = typer.Typer(cls=OneLineErrors, no_args_is_help=True,
                  help="Quantization: HAWQ sensitivity per unit, integer-program bit allocation.")

CONFIG_HELP = "The subnet as a JSON object of genes, or largest / smallest (default: largest)."
BITS_HELP = "Bit widths to score, comma separated (2 to 8, and 32)."


def _subnet(supernet_name: str, config: str) -> tuple[Any, Any, Any]:
    from nas import get_supernet, get_task

    supernet = get_supernet(supernet_name)
    if not supernet.quant_units():
        raise ValueError(f"supernet {supernet_name!r} has no weights to quantize")
    if config in ("largest", "smallest"):
        arch = getattr(supernet.space, config)()
    else:
        arch = supernet.space.from_json(config)
    return supernet, get_task(supernet.task_name), arch


def _bits(text: str) -> list[int]:
    try:
        widths = sorted({int(part) for part in text.split(",") if part.strip()}, reverse=True)
    except ValueError:
        raise ValueError(f"--bits must be comma-separated integers, got {text!r}") from None
    if not widths or any(not (2 <= b <= 8 or b == 32) for b in widths):
        raise ValueError(f"--bits must be widths from 2 to 8 or 32, got {text!r}")
    return widths


# The options both commands take.
_SUPERNET = typer.Option(..., "--supernet", help="Supernet name (see `nas supernets list`).")
_CONFIG = typer.Option("largest", "--config", help=CONFIG_HELP)
_BITS = typer.Option("8,4", "--bits", help=BITS_HELP)
_SAMPLES = typer.Option(16, "--samples", min=1, max=256,
                        help="Hutchinson samples per Hessian trace.")


@app.command("sensitivity")
@user_errors
def sensitivity_command(
    supernet: str = _SUPERNET, config: str = _CONFIG, bits: str = _BITS,
    samples: int = _SAMPLES,
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Rank a subnet's units by HAWQ's sensitivity: average Hessian trace (Hutchinson, on
    the task's calibration samples) times the squared weight quantization error."""
    from nas.quant import calibration_batches
    from nas.quant._hawq import subnet_sensitivity

    widths = _bits(bits)
    net, task, arch = _subnet(supernet, config)
    _, _, omega = subnet_sensitivity(net, task, arch, widths,
                                     batches=calibration_batches(task), samples=samples)
    low = min(widths)
    ranked = sorted(omega, key=lambda unit: -omega[unit][low])
    rows = [{"unit": u, "sensitivity": {str(b): omega[u][b] for b in widths}} for u in ranked]
    if json_output:
        print_json({"supernet": supernet, "config": dict(arch), "bits": widths, "units": rows})
        return
    table = Table(title=f"HAWQ sensitivity of {supernet}'s units (most sensitive first)")
    table.add_column("unit")
    for width in widths:
        table.add_column(f"{width}-bit", justify="right")
    for row in rows:
        table.add_row(row["unit"], *(f"{row['sensitivity'][str(b)]:.3e}" for b in widths))
    console.print(table)


@app.command("allocate")
@user_errors
def allocate_command(
    supernet: str = _SUPERNET, config: str = _CONFIG, bits: str = _BITS,
    samples: int = _SAMPLES,
    size_budget: str = typer.Option(..., "--size-budget", help="Model size budget, e.g. '1MB'."),
    json_output: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """HAWQ-V3's baseline: the bit width per unit with the least total sensitivity whose
    model fits --size-budget (an integer program, scipy's milp)."""
    from nas._units import parse_size_mb
    from nas.quant import calibration_batches
    from nas.quant._hawq import hawq_policy, subnet_sensitivity

    budget = parse_size_mb(size_budget)
    widths = _bits(bits)
    net, task, arch = _subnet(supernet, config)
    model, layers, omega = subnet_sensitivity(net, task, arch, widths,
                                              batches=calibration_batches(task),
                                              samples=samples)
    policy, size = hawq_policy(omega, model, layers, size_budget_mb=budget)
    if json_output:
        print_json({"supernet": supernet, "config": dict(arch), "size_budget_mb": budget,
                    "size_mb": size, "bits": policy})
        return
    counts: dict[int, int] = {}
    for width in policy.values():
        counts[width] = counts.get(width, 0) + 1
    console.print(f"{supernet}: {size:.3f} MB <= {budget:g} MB with "
                  + ", ".join(f"{n} units at {w} bits" for w, n in sorted(counts.items())),
                  highlight=False)
    for unit, width in policy.items():
        console.print(f"  {unit}: {width}", highlight=False)
