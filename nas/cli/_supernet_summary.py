"""What ``nas supernets show`` reports about one supernet (a JSON-able dict)."""

from __future__ import annotations

from typing import Any

from nas._supernet import SUPERNETS, get_supernet


def supernet_summary(name: str) -> dict[str, Any]:
    """Family, task, space (genes and number of distinct subnets), parameter range of the
    smallest and largest subnets, checkpoint hash and, for zoo entries, the training
    scheme and recorded accuracy of both extremes.

    Raises:
        UnknownNameError: no supernet ``name`` (the message lists the known ones).
    """
    from nas.supernets.training._loop import read_checkpoint_meta
    from nas.supernets.training._zoo import ZOO_RECIPES, zoo_dir

    description = SUPERNETS.entry(name).description
    supernet = get_supernet(name)
    space = supernet.space
    summary: dict[str, Any] = {
        "name": name,
        "description": description,
        "family": supernet.family,
        "task": supernet.task_name,
        "space": space.name,
        "subnets": space.cardinality(),
        "params_smallest": _params(supernet.extract(space.smallest())),
        "params_largest": _params(supernet.extract(space.largest())),
        "checkpoint_sha256": supernet.checkpoint_hash,
    }
    if name in ZOO_RECIPES:
        meta = read_checkpoint_meta(zoo_dir() / ZOO_RECIPES[name].stem)
        recipe = meta["recipe"]
        scheme = recipe.get("scheme") or {"name": "sandwich", **recipe.get("sandwich", {})}
        summary |= {
            "scheme": scheme.get("name"),
            "steps": recipe.get("steps"),
            "accuracy_largest": meta["metrics"].get("largest", {}).get("accuracy"),
            "accuracy_smallest": meta["metrics"].get("smallest", {}).get("accuracy"),
            "command": meta.get("command"),
        }
    summary["genes"] = list(space.names)
    return summary


def _params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())
