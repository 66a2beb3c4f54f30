"""Run an exported HAT subnet in ONNX Runtime, without `nas`: numpy and onnxruntime only.

`nas export --study hat-rpi4 --trial N --out subnet --format safetensors,onnx` wrote the
folder `subnet/`; change `folder` and `words` for yours.
"""

import json

import numpy as np
import onnxruntime as ort

folder = "subnet"
words = ["hello", "world", "python"]


def session(name):
    s = ort.InferenceSession(f"{folder}/{name}", providers=["CPUExecutionProvider"])
    inputs = [i.name for i in s.get_inputs()]
    return lambda *arrays: s.run(None, dict(zip(inputs, arrays)))


# 1. The one-shot graph: (src_tokens, prev_output_tokens) -> logits, at fixed shapes.
model = session("model.onnx")
example = np.load(f"{folder}/example_inputs.npz")
(logits,) = model(example["input0"], example["input1"])
expected = np.load(f"{folder}/expected_outputs.npz")["output0"]
print("model.onnx logits", logits.shape, "max diff to PyTorch", float(np.abs(logits - expected).max()))

# 2. Real words: the encoder graph once, then the decoder-step graph once per phoneme.
spec = json.load(open(f"{folder}/config.json"))["decoding"]
vocab = json.load(open(f"{folder}/{spec['vocab']}"))
encoder = session(spec["files"]["onnx"]["encoder"])
step = session(spec["files"]["onnx"]["step"])

stoi = {s: i for i, s in enumerate(vocab["source"])}
rows = [[stoi.get(c, vocab["unk"]) for c in w.lower()] + [vocab["eos"]] for w in words]
src = np.full((len(rows), max(map(len, rows))), vocab["pad"], dtype=np.int64)  # (B, S)
for r, row in enumerate(rows):
    src[r, : len(row)] = row

memory = encoder(src)  # src_padding, then a key and a value per decoder layer
cache = [np.zeros((len(words), heads, 0, width), np.float32)
         for heads, width in spec["cache"] for _ in ("key", "value")]
token = np.full((len(words), 1), vocab["bos"], dtype=np.int64)  # (B, 1)
done = np.zeros(len(words), dtype=bool)
out = []
for _ in range(src.shape[1] + 4):
    logits, *cache = step(token, *memory, *cache)  # logits (B, target vocabulary)
    token = np.where(done, vocab["pad"], logits.argmax(-1)).astype(np.int64)[:, None]
    out.append(token[:, 0])
    done |= token[:, 0] == vocab["eos"]
    if done.all():
        break

for word, row in zip(words, np.stack(out, 1)):
    phonemes = []
    for i in row.tolist():
        if i == vocab["eos"]:
            break
        phonemes.append(vocab["target"][i])
    print(f"{word:>10} -> {' '.join(phonemes)}")
