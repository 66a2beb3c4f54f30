"""Weight-sharing supernets behind one interface, their tasks and shipped checkpoints.

Importing this package registers the built-ins: the supernet ``hat`` (the shipped
checkpoint), the task ``g2p-cmudict``, the dense subnet family ``hat``, the tabular benchmark
``nb201`` and, on its cells, the supernet ``nb201`` (NAS-Bench-201's network, random
weights) with the task ``nb201-cifar10`` (accuracy from the table).
"""

from nas.supernets._g2p import G2PTask, Vocabulary, read_lexicon
from nas.supernets._hat_dense import HATEncoderOut, HATSubnet
from nas.supernets._hat_space import G2P_SPACE, WMT_SPACE, HATDesignSpace
from nas.supernets._nb201_network import NB201Network, NB201SuperNetwork
from nas.supernets._training import (
    SUPERNET_FAMILIES,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
    train_supernet,
)
from nas.supernets._zoo import ZOO_RECIPES, ZooRecipe, train_and_save, zoo_dir
from nas.supernets.hat import HATSuperTransformer
from nas.supernets.nb201 import (
    NB201_SPACE,
    TABLES,
    NB201Table,
    arch_str_to_config,
    config_to_arch_str,
    get_table,
    hv_gap,
    list_tables,
    true_front,
    true_front_found,
)
from nas.supernets.nb201_supernet import NB201Cifar10Task

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
    "NB201_SPACE",
    "NB201Cifar10Task",
    "NB201Network",
    "NB201SuperNetwork",
    "NB201Table",
    "TABLES",
    "Vocabulary",
    "ZooRecipe",
    "arch_str_to_config",
    "config_to_arch_str",
    "get_table",
    "hv_gap",
    "list_tables",
    "load_checkpoint",
    "read_checkpoint_meta",
    "read_lexicon",
    "save_checkpoint",
    "train_and_save",
    "train_supernet",
    "true_front",
    "true_front_found",
    "zoo_dir",
]
