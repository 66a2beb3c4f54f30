"""Stand-ins for your own measurements on OFA's published MobileNetV3 space (`ofa-mbv3`).

Writes, in the current folder:

- `lut/<resolution>_lookup_table.yaml`: per-layer latency lookup tables in OFA's format
  (`{layer key: {mean: ms, std: ms, count: n}}`), as OFA publishes per device. Yours
  come from timing each layer on your device; here each layer's figure is made up from
  its shape (a cost per output element and per MAC of the expanded conv).
- `accuracy.csv`: one row per measured subnet, one column per gene of the space and an
  `accuracy` column. Yours come from training or fine-tuning subnets; here a made-up
  function of the genes (wider, deeper and larger inputs score higher) plus noise.
"""

import re
from pathlib import Path

import numpy as np
import yaml

import nas
from nas.hardware import OFAEncoding, OFAWidths
from nas.hardware._ofa_lut import layer_keys  # the layer keys OFA's tables use

RESOLUTIONS = (160, 224)
rng = np.random.default_rng(0)


def made_up_ms(key: str) -> float:
    """A latency for one layer key, from the sizes it names."""
    sizes = [int(n) for n in re.findall(r"\d+", key)]
    return round(1e-6 * float(np.prod(sizes[:3])) * (1 + sum(sizes[3:]) / 100), 4)


widths = OFAWidths.at(1.0)
Path("lut").mkdir(exist_ok=True)
for r in RESOLUTIONS:
    keys = set()
    for kernel in (3, 5, 7):
        for expand in (3, 4, 6):
            encoding = OFAEncoding((kernel,) * 20, (expand,) * 20, (4,) * 5, r)
            keys.update(layer_keys(encoding, widths))
    table = {k: {"mean": made_up_ms(k), "std": 0.0, "count": 1} for k in sorted(keys)}
    Path(f"lut/{r}_lookup_table.yaml").write_text(yaml.safe_dump(table))

space = nas.get_space("ofa-mbv3").space
names = list(space.names)
rows = []
for _ in range(120):
    config = space.sample(rng)
    genes = np.array([float(config.get(n, 0)) for n in names])
    resolution = float(config["resolution"]) if "resolution" in names else 224.0
    size = genes.sum() / genes.size
    accuracy = 0.70 + 0.02 * np.log(size) + 0.0003 * (resolution - 160) + rng.normal(0, 0.002)
    rows.append([*genes, round(float(accuracy), 5)])
with open("accuracy.csv", "w") as f:
    f.write(",".join([*names, "accuracy"]) + "\n")
    for row in rows:
        f.write(",".join(f"{v:g}" for v in row) + "\n")
print(f"wrote lut/ ({', '.join(f'{r}_lookup_table.yaml' for r in RESOLUTIONS)}) "
      f"and accuracy.csv ({len(rows)} subnets, {len(names)} genes)")
