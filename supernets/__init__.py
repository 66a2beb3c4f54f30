"""Weight-sharing supernets behind one interface, their tasks and shipped checkpoints.

Importing this package registers the built-ins: the supernet ``hat`` (the shipped
checkpoint), the task ``g2p-cmudict`` and the dense subnet family ``hat``.
"""

from nas.supernets._g2p import G2PTask, Vocabulary, read_lexicon
from nas.supernets._hat_dense import HATEncoderOut, HATSubnet
from nas.supernets._hat_space import G2P_SPACE, WMT_SPACE, HATDesignSpace
from nas.supernets._training import (
    SUPERNET_FAMILIES,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
    train_supernet,
)
from nas.supernets._zoo import ZOO_RECIPES, ZooRecipe, train_and_save, zoo_dir
from nas.supernets.hat import HATSuperTransformer

__all__ = [
    "G2P_SPACE",
    "SUPERNET_FAMILIES",
    "WMT_SPACE",
    "ZOO_RECIPES",
    "G2PTask",
    "HATDesignSpace",
    "HATEncoderOut",
    "HATSubnet",
    "HATSuperTransformer",
    "Vocabulary",
    "ZooRecipe",
    "load_checkpoint",
    "read_checkpoint_meta",
    "read_lexicon",
    "save_checkpoint",
    "train_and_save",
    "train_supernet",
    "zoo_dir",
]
