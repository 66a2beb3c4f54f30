"""Weight-sharing supernets behind one interface, their tasks and shipped checkpoints."""

from nas.supernets._hat_dense import HATEncoderOut, HATSubnet
from nas.supernets._hat_space import G2P_SPACE, WMT_SPACE, HATDesignSpace
from nas.supernets.hat import HATSuperTransformer

__all__ = [
    "G2P_SPACE",
    "WMT_SPACE",
    "HATDesignSpace",
    "HATEncoderOut",
    "HATSubnet",
    "HATSuperTransformer",
]

# The built-in task, the sandwich-rule trainer and the zoo (registers "g2p-cmudict" and "hat").
from nas.supernets._g2p import G2PTask, Vocabulary, read_lexicon  # noqa: E402
from nas.supernets._training import (  # noqa: E402
    SUPERNET_FAMILIES,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
    train_supernet,
)
from nas.supernets._zoo import ZOO_RECIPES, ZooRecipe, train_and_save, zoo_dir  # noqa: E402

__all__ += [
    "SUPERNET_FAMILIES",
    "ZOO_RECIPES",
    "G2PTask",
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
