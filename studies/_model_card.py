"""The ``MODEL_CARD.md`` written beside each exported subnet."""

from __future__ import annotations

from typing import Any

from nas._task import TASKS
from nas.studies._graphs import FILES, INPUTS, OUTPUTS, TOLERANCE

GRAPH_LIMITS = {
    "hat": ("The graph is the teacher-forced forward pass `(src_tokens, prev_output_tokens)"
            " -> logits` at the example's fixed lengths; greedy decoding is not in it "
            "(tracing would unroll its loop for one output length), and an encoder graph "
            "plus a one-step decoder graph with the cache as inputs is not built yet."),
}
"""Per supernet family: what the exported graphs do not contain."""


def model_card(document: dict[str, Any]) -> str:
    """A short ``MODEL_CARD.md``: what the model is, its figures, how to load it, limits."""
    meta = document["metadata"]
    sections = [
        f"# {meta['supernet']} subnet, trial {meta['trial']} of study {meta['study']}",
        _card_what(document),
        "## Metrics\n\n" + _card_metrics(document),
        "## Loading without `nas`\n\n" + _card_loading(document),
        "## Limits\n\n" + _card_limits(document),
    ]
    return "\n\n".join(sections) + "\n"


def _card_what(document: dict[str, Any]) -> str:
    meta = document["metadata"]
    genes = ", ".join(f"{k}={v}" for k, v in meta["config"].items())
    files = ", ".join(f"{name} (`{entry['file']}`)"
                      for name, entry in document["formats"].items()) or "none"
    return (f"A dense subnet extracted from the `{meta['supernet']}` supernet "
            f"(checkpoint `{document['supernet_hash'][:12]}`, space `{meta['space']}`), "
            f"found by study `{meta['study']}` (seed {document['seed']}) for hardware "
            f"target `{document['hardware']['name']}`.\n\n"
            f"Architecture: {genes}.\n\nFormats: {files}. `config.json` holds the full "
            f"architecture, metrics and input spec.\n\nBatchNorm: {document['batchnorm']}.")


def _card_metrics(document: dict[str, Any]) -> str:
    meta, hardware = document["metadata"], document["hardware"]
    task_name = meta.get("task") or ""
    about = (TASKS.entry(task_name).description if task_name in TASKS.names()
             else "the study's task")
    limit = document.get("eval_limit")
    scope = f", limit={limit}" if limit else ""
    meanings = {
        "accuracy": (f"{about} (task `{task_name}`, evaluated by the search with "
                     f"split=validation{scope})"),
        "latency_ms": (f"milliseconds per batch-1 inference on `{hardware['name']}`, "
                       f"{hardware['latency_method']}: {hardware['latency_source']}"),
    }
    return "\n".join(f"- `{name}` = {value:.6g}: {meanings.get(name, 'as the study recorded it')}"
                     for name, value in document["metrics"].items())


def _card_loading(document: dict[str, Any]) -> str:
    formats, blocks = document["formats"], []
    if "onnx" in formats:
        blocks.append("ONNX Runtime:\n\n```python\nimport numpy as np, onnxruntime as ort\n"
                      f"session = ort.InferenceSession(\"{FILES['onnx']}\")\n"
                      f"outputs = session.run(None, dict(np.load(\"{INPUTS}\")))\n```")
    if "torchscript" in formats:
        blocks.append("TorchScript:\n\n```python\nimport numpy as np, torch\n"
                      f"model = torch.jit.load(\"{FILES['torchscript']}\").eval()\n"
                      "outputs = model(*[torch.from_numpy(a) for a in "
                      f"np.load(\"{INPUTS}\").values()])\n```")
    if "safetensors" in formats:
        blocks.append("safetensors holds the weights only; `nas.load_subnet(DIR)` rebuilds "
                      "the module from them and `config.json`.")
    if "inputs" in document:
        spec = "; ".join(f"`{i['name']}` ({i['argument']}): {i['dtype']} {i['shape']}"
                         for i in document["inputs"])
        blocks.append(f"Inputs: {spec}. `{INPUTS}` holds them and `{OUTPUTS}` the PyTorch "
                      f"outputs they give (graph outputs agree within {TOLERANCE:g}).")
    return "\n\n".join(blocks)


def _card_limits(document: dict[str, Any]) -> str:
    limits = []
    if "inputs" in document:
        limits.append("Graph input shapes are fixed to those of the example inputs "
                      "(no dynamic axes); re-export for other shapes.")
    family_limit = GRAPH_LIMITS.get(document["family"])
    if family_limit and len(document["formats"]) > ("safetensors" in document["formats"]):
        limits.append(family_limit)
    limits.append("Metrics are the study's figures for the supernet's shared weights; "
                  "the subnet was not fine-tuned after extraction.")
    return "\n".join(f"- {line}" for line in limits)
