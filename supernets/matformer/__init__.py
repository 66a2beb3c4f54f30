"""The MatFormer family: supernet ``matformer``, task ``pydoc-lm``, dense subnet family
``matformer`` and its zoo entry.

MatFormer (Devvrit, Kudugunta et al., 2023) nests the FFN of every decoder block in four
granularities (S, M, L, XL = 1/8, 1/4, 1/2, 1 of ``d_ff``), trains them jointly (the sum
of their losses on each batch, :class:`MatFormerJoint`) and serves budgets in between by
Mix'n'Match, a granularity per layer. The shipped checkpoint is a 4-layer byte-level
decoder (d_model 128, d_ff 512, context 64) trained on Python's own documentation;
``nas train --supernet matformer --data PATH`` trains it on a user's text instead
(:func:`text_task`).
"""

from __future__ import annotations

from pathlib import Path

from nas._supernet import SUPERNET_FAMILIES, SUPERNETS, Supernet
from nas._task import Task
from nas.supernets.matformer._dense import FAMILY, MatFormerLM
from nas.supernets.matformer._model import (
    GRANULARITIES,
    MatFormerJoint,
    MatFormerSupernet,
    NestedFeedForward,
    matformer_space,
)
from nas.supernets.tasks._lm import LM_TASK_NAME, VOCAB_SIZE, ByteLMTask, PydocLMTask
from nas.supernets.tasks._text_files import TextLMTask
from nas.supernets.training._zoo import ZooRecipe, add_recipe, load_zoo_checkpoint

__all__ = [
    "GRANULARITIES",
    "LM_TASK_NAME",
    "NAME",
    "MatFormerJoint",
    "MatFormerLM",
    "MatFormerSupernet",
    "NestedFeedForward",
    "PydocLMTask",
    "TextLMTask",
    "matformer_space",
    "matformer_supernet",
    "text_task",
]

NAME = "matformer"
ARCHITECTURE = {"vocab_size": VOCAB_SIZE, "d_model": 128, "n_layers": 4, "n_heads": 4,
                "d_ff": 512, "context": 64}
"""The shipped supernet's size."""

SUPERNET_FAMILIES.register(FAMILY, description="MatFormer nested-FFN decoder LM")(
    MatFormerSupernet.from_architecture
)


@SUPERNETS.register(
    NAME,
    description="MatFormer decoder LM (4 layers, nested FFN S/M/L/XL, Mix'n'Match per "
    "layer) trained on Python's pydoc text, byte level (task pydoc-lm)",
)
def matformer_supernet() -> Supernet:
    """The shipped MatFormer supernet with its trained weights, in eval mode."""
    return load_zoo_checkpoint(NAME)


def text_task(path: Path) -> TextLMTask:
    """The task on a user's ``.txt`` file or folder of them (``--data``), byte level with
    the shipped context (:mod:`nas.supernets.tasks._text_files` gives the split rule)."""
    return TextLMTask(path, context=ARCHITECTURE["context"])


def _build(task: Task) -> Supernet:
    """An untrained supernet of the shipped size, its context that of ``task`` (pydoc's
    or a user's text, both bytes)."""
    if not isinstance(task, ByteLMTask):
        raise TypeError(f"the {NAME} zoo entry needs a byte-level LM task (PydocLMTask, "
                        f"TextLMTask), got {type(task).__name__}")
    return MatFormerSupernet(**(ARCHITECTURE | {"context": task.context}))


add_recipe(ZooRecipe(
    name=NAME,
    stem="matformer-pydoc",
    task=LM_TASK_NAME,
    build=_build,
    steps=350,
    batch_size=32,
    lr=3e-3,
    seed=0,
    warmup=35,
    scheme=MatFormerJoint,
    eval_limit=None,
    user_task=text_task,
))
