"""The ``MODEL_CARD.md`` written beside each exported subnet."""

from __future__ import annotations

import inspect
from typing import Any

from nas._task import TASKS
from nas.studies import _decoding_loop
from nas.studies._graphs import FILES, INPUTS, OUTPUTS, TOLERANCE, VOCAB

GRAPH_LIMITS = {
    "hat": ("`model.onnx`/`model.torchscript.pt` hold the teacher-forced forward pass "
            "`(src_tokens, prev_output_tokens) -> logits` at the example's fixed lengths; "
            "greedy decoding deploys as the encoder and decoder-step graphs (see \"Greedy "
            "decoding without `nas`\"), written for unquantized subnets only."),
}
"""Per supernet family: what the exported graphs do not contain."""

DECODING_HEADING = "## Greedy decoding without `nas`"


def model_card(document: dict[str, Any]) -> str:
    """A short ``MODEL_CARD.md``: what the model is, its figures, how to load it, limits."""
    meta = document["metadata"]
    sections = [
        f"# {meta['supernet']} subnet, trial {meta['trial']} of study {meta['study']}",
        _card_what(document),
        "## Metrics\n\n" + _card_metrics(document),
        "## Loading without `nas`\n\n" + _card_loading(document),
        *([DECODING_HEADING + "\n\n" + _card_decoding(document)]
          if "decoding" in document else []),
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


def _card_decoding(document: dict[str, Any]) -> str:
    """The deployed form of a seq2seq subnet and the loop that runs it, verbatim."""
    spec = document["decoding"]
    files = "; ".join(f"{name}: `{f['encoder']}` + `{f['step']}`"
                      for name, f in spec["files"].items())
    first = next(iter(spec["files"]))
    runner = {"onnx": "onnx_runner", "torchscript": "torchscript_runner"}[first]
    return (
        f"Two graphs ({files}) and a loop outside them. The encoder takes `src_tokens` "
        f"(batch, source length) and returns {', '.join(f'`{n}`' for n in spec['encoder_outputs'])}"
        f"; the decoder step takes {', '.join(f'`{n}`' for n in spec['step_inputs'])} and "
        f"returns {', '.join(f'`{n}`' for n in spec['step_outputs'])}. The self-attention "
        f"cache of decoder layer i is (batch, heads, length, head width) with (heads, head "
        f"width) = {', '.join(f'{tuple(c)}' for c in spec['cache'])}; it starts at length "
        f"0 and grows by one position per step. Batch, source and cache lengths are free. "
        f"`{VOCAB}` holds the vocabularies; `config.json`'s `decoding` section the names, "
        f"shapes and checks (greedy decoding over each format gave the model's tokens on "
        f"{spec['checks'][first]['greedy_rows']} test words).\n\n"
        f"The loop (numpy, and the runtime in its runner):\n\n```python\n"
        f"{inspect.getsource(_decoding_loop).strip()}\n```\n\n"
        f"Translate words, in this folder:\n\n```python\n"
        f"spec, vocab = load_decoding(\".\")\n"
        f"files = spec[\"files\"][\"{first}\"]\n"
        f"encoder, step = {runner}(files[\"encoder\"]), {runner}(files[\"step\"])\n"
        f"src = encode_words([\"hello\", \"world\"], vocab)\n"
        f"for row in greedy_decode(encoder, step, src, spec, vocab):\n"
        f"    print(\" \".join(decode_tokens(row, vocab)))\n```"
        + ("\n\nTorchScript: the same with `torchscript_runner` and "
           "`spec[\"files\"][\"torchscript\"]`." if first == "onnx" and "torchscript" in
           spec["files"] else "")
    )


def _card_limits(document: dict[str, Any]) -> str:
    limits = []
    if "inputs" in document:
        limits.append("`model.*` graph input shapes are fixed to those of the example "
                      "inputs (no dynamic axes); re-export for other shapes.")
    family_limit = GRAPH_LIMITS.get(document["family"])
    if family_limit and len(document["formats"]) > ("safetensors" in document["formats"]):
        limits.append(family_limit)
    limits.append("Metrics are the study's figures for the supernet's shared weights; "
                  "the subnet was not fine-tuned after extraction.")
    return "\n".join(f"- {line}" for line in limits)
