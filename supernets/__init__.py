"""Weight-sharing supernets behind one interface, their tasks and shipped checkpoints.

Importing this package registers the built-ins (supernet: family, task):

- ``hat``: HAT SuperTransformer, ``g2p-cmudict`` (CMUdict grapheme-to-phoneme);
- ``nb201``: NAS-Bench-201's network (random weights), ``nb201-cifar10`` (table accuracy);
- ``ofa``: Once-for-All MobileNetV3, ``digits-image`` (scikit-learn's digits);
- ``sortednet``: SortedNet sorted MLP, ``digits-vector`` (also a sorted transformer family);
- ``matformer``: MatFormer nested-FFN decoder LM, ``pydoc-lm`` (Python's documentation);
- ``flexibert`` and ``flexibert-minilm``: FlexiBERT heterogeneous encoders,
  ``minilm-distill-pydoc`` (MiniLM sentence-embedding distillation; extra ``minilm``);

and two plain (not weight-sharing) models for compression, with their dense builders:
``moe-lm`` (a Mixtral-style mixture of experts, :mod:`.moe`) and ``mamba-lm`` (Mamba-2,
:mod:`.mamba`);

Each family is a sub-package (its ``__init__`` the public module, ``_dense.py`` the dense
subnet builder); the tasks are in :mod:`.tasks`, the training loop, schemes and zoo
recipes in :mod:`.training`. The zoo of plain models (``moe-pydoc``, ``mamba-pydoc``:
:func:`load_zoo_model`, :func:`train_model`) is in :mod:`.training._models`.
"""

# Importing each family module registers its supernet, task, dense subnet and zoo entry.
from nas.supernets import flexibert, mamba, matformer, moe, ofa, sortednet  # noqa: E402, I001
from nas.supernets.tasks._digits import DigitsTask  # noqa: E402
from nas.supernets.training._schemes import (  # noqa: E402
    FixedSubnet,
    SandwichRule,
    TrainingRun,
    TrainingScheme,
)
from nas.supernets.ofa._scheme import ProgressiveShrinking  # noqa: E402
from nas.supernets.ofa._space import DIGITS_SPACE, MOBILENETV3_SPACE, OFADesignSpace  # noqa: E402
from nas.supernets.flexibert import FlexiBERTSubnet, FlexiBERTSupernet  # noqa: E402
from nas.supernets.mamba import MambaLM  # noqa: E402
from nas.supernets.matformer import MatFormerJoint, MatFormerLM, MatFormerSupernet  # noqa: E402
from nas.supernets.moe import MoELM  # noqa: E402
from nas.supernets.ofa import OFAMobileNetV3, OFASubnet  # noqa: E402
from nas.supernets.sortednet import SortedMLP, SortedTraining, SortedTransformer  # noqa: E402
from nas.supernets.tasks._g2p import G2PTask, Vocabulary, read_lexicon
from nas.supernets.hat._dense import HATEncoderOut, HATSubnet
from nas.supernets.hat._space import G2P_SPACE, WMT_SPACE, HATDesignSpace
from nas.supernets.nb201._network import NB201Network, NB201SuperNetwork
from nas.supernets.training._loop import (
    SUPERNET_FAMILIES,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
    train_supernet,
)
from nas.supernets.training._zoo import (
    ZOO_RECIPES,
    ZooRecipe,
    resume_training,
    train_and_save,
    zoo_dir,
)
from nas.supernets.training._models import (
    MODEL_RECIPES,
    ExtraLoss,
    ModelRecipe,
    WarmStart,
    add_model_recipe,
    list_zoo_models,
    load_zoo_model,
    model_recipe,
    train_model,
)
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
from nas.supernets.nb201.supernet import NB201Cifar10Task

__all__ = [
    "DIGITS_SPACE",
    "MOBILENETV3_SPACE",
    "DigitsTask",
    "ExtraLoss",
    "MODEL_RECIPES",
    "ModelRecipe",
    "WarmStart",
    "add_model_recipe",
    "list_zoo_models",
    "load_zoo_model",
    "model_recipe",
    "train_model",
    "FixedSubnet",
    "FlexiBERTSubnet",
    "FlexiBERTSupernet",
    "MatFormerJoint",
    "MatFormerLM",
    "MatFormerSupernet",
    "MambaLM",
    "MoELM",
    "OFADesignSpace",
    "OFAMobileNetV3",
    "OFASubnet",
    "ProgressiveShrinking",
    "SandwichRule",
    "SortedMLP",
    "SortedTraining",
    "SortedTransformer",
    "TrainingRun",
    "TrainingScheme",
    "flexibert",
    "mamba",
    "matformer",
    "moe",
    "ofa",
    "sortednet",
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
    "resume_training",
    "train_and_save",
    "train_supernet",
    "true_front",
    "true_front_found",
    "zoo_dir",
]
