"""Greedy decoding over an exported encoder graph and decoder-step graph, numpy only.

MODEL_CARD.md prints this module's source as it stands, so a user runs the very loop
that ``nas hw check`` times and the tests compare with ``greedy_decode``: it imports
json and numpy, and the runtime (onnxruntime or torch) only in its runner. ``encoder``
and ``step`` are runners: a graph called on arrays in input order, returning its
outputs in order.
"""

import json

import numpy as np


def load_decoding(folder):
    """config.json's "decoding" section and vocab.json of an export folder."""
    with open(f"{folder}/config.json") as f:
        spec = json.load(f)["decoding"]
    with open(f"{folder}/{spec['vocab']}") as f:
        return spec, json.load(f)


def encode_words(words, vocab):
    """Source tokens (B, S) int64: lower-cased letters, then eos, padded."""
    stoi = {s: i for i, s in enumerate(vocab["source"])}
    rows = [[stoi.get(c, vocab["unk"]) for c in w.lower()] + [vocab["eos"]] for w in words]
    src = np.full((len(rows), max(map(len, rows))), vocab["pad"], dtype=np.int64)
    for r, row in enumerate(rows):
        src[r, : len(row)] = row
    return src


def greedy_decode(encoder, step, src, spec, vocab, steps=None):
    """Output tokens (B, n), bos excluded, pad after a row's eos. Stops when every row
    has emitted eos or after source length + 4 tokens; with ``steps``, exactly that many."""
    batch = src.shape[0]
    memory = encoder(src)  # src_padding, then memory key and value per decoder layer
    cache = [np.zeros((batch, heads, 0, size), np.float32)
             for heads, size in spec["cache"] for _ in ("key", "value")]
    count = steps if steps is not None else min(src.shape[1] + 4, spec["max_positions"])
    token = np.full((batch, 1), vocab["bos"], dtype=np.int64)
    finished = np.zeros(batch, dtype=bool)
    out = []
    for _ in range(count):
        logits, *cache = step(token, *memory, *cache)
        nxt = np.where(finished, vocab["pad"], logits.argmax(-1)).astype(np.int64)
        out.append(nxt)
        finished |= nxt == vocab["eos"]
        if steps is None and finished.all():
            break
        token = nxt[:, None]
    return np.stack(out, 1) if out else np.zeros((batch, 0), np.int64)


def decode_tokens(row, vocab):
    """Target symbols of one output row, up to its eos."""
    out = []
    for i in row.tolist():
        if i == vocab["eos"]:
            break
        if i not in (vocab["pad"], vocab["bos"]):
            out.append(vocab["target"][i])
    return out


def onnx_runner(path, threads=1):
    """A graph on ONNX Runtime's CPU provider, called on arrays in input order."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda *arrays: session.run(None, dict(zip(names, arrays)))


def torchscript_runner(path):
    """A graph saved by torch.jit, called on arrays in input order."""
    import torch

    module = torch.jit.load(str(path)).eval()

    def run(*arrays):
        with torch.no_grad():
            out = module(*(torch.from_numpy(a) for a in arrays))
        return [t.numpy() for t in out]

    return run
