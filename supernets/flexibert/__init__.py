"""The FlexiBERT family (Tuli, Dedhia, Tuli & Jha, "FlexiBERT: Are Current Transformer
Architectures too Homogeneous and Rigid?", JAIR 2022): registrations.

- supernet ``flexibert``: the shipped checkpoint, the paper's test-space structure
  (2 or 4 heterogeneous layers, 6 operations, 2 or 4 heads, 1 or 3 feed-forward stacks;
  3,317,817,600 models) at small widths (:data:`TINY_SPEC`), trained with
  ``nas train --supernet flexibert`` on the task ``minilm-distill-pydoc``;
- supernet ``flexibert-minilm``: a space around all-MiniLM-L6-v2 (:data:`MINILM_SPEC`)
  whose weights are copied from the installed MiniLM at load time (no shipped weights),
  so its MiniLM-architecture subnet *is* MiniLM; task ``minilm-distill-pydoc-wordpiece``;
- the family ``flexibert`` (checkpoints rebuild from their architecture), the dense
  subnet builder ``flexibert`` and the zoo recipe, which also trains on a user's CSV of
  sentences (``--data``, :func:`sentence_task`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from nas._files import file_sha256
from nas._supernet import SUPERNETS, Supernet
from nas._task import Task
from nas.supernets.flexibert._dense import FlexiBERTSubnet
from nas.supernets.flexibert._model import FAMILY, FlexiBERTSandwich, FlexiBERTSupernet
from nas.supernets.flexibert._space import (
    MINILM_SPEC,
    PAPER_TEST_SPACE,
    PAPER_TEST_SPEC,
    TINY_SPEC,
    FlexiBERTSpec,
)
from nas.supernets.tasks._minilm import load_minilm, minilm_dir
from nas.supernets.tasks._sentence import (
    MAX_TOKENS,
    TASK_NAME,
    WORDPIECE_TASK_NAME,
    SentenceDistillTask,
)
from nas.supernets.tasks._sentence_files import SentenceFileTask
from nas.supernets.training._loop import SUPERNET_FAMILIES
from nas.supernets.training._zoo import ZooRecipe, add_recipe, load_zoo_checkpoint

__all__ = [
    "MINILM_SPEC",
    "NAME",
    "PAPER_TEST_SPACE",
    "PAPER_TEST_SPEC",
    "TINY_SPEC",
    "FlexiBERTSandwich",
    "FlexiBERTSpec",
    "FlexiBERTSubnet",
    "FlexiBERTSupernet",
    "SentenceDistillTask",
    "SentenceFileTask",
    "from_minilm",
    "minilm_config",
    "sentence_task",
]

NAME = "flexibert"
MINILM_NAME = "flexibert-minilm"

SUPERNET_FAMILIES.register(FAMILY, description="FlexiBERT heterogeneous encoder supernet")(
    FlexiBERTSupernet.from_architecture
)


@SUPERNETS.register(
    NAME,
    description="FlexiBERT heterogeneous encoder (paper's test-space structure, small "
    "widths) distilling MiniLM sentence embeddings of pydoc paragraphs "
    "(task minilm-distill-pydoc; accuracy = cosine fidelity)",
)
def flexibert() -> Supernet:
    """The shipped FlexiBERT supernet with its trained weights, in eval mode."""
    return load_zoo_checkpoint(NAME)


@SUPERNETS.register(
    MINILM_NAME,
    description="FlexiBERT supernet initialised from the installed all-MiniLM-L6-v2 "
    "(its MiniLM subnet reproduces MiniLM); needs the optional extra 'minilm'",
)
def flexibert_minilm() -> Supernet:
    """The MiniLM-initialised supernet over :data:`MINILM_SPEC`, in eval mode."""
    return from_minilm()


def minilm_config(spec: FlexiBERTSpec = MINILM_SPEC) -> dict[str, int | str]:
    """The config of MiniLM's own architecture in ``spec``'s space.

    Raises:
        ValueError: the space does not contain MiniLM's architecture.
    """
    model, _ = load_minilm()
    cfg = model.config
    values: dict[str, int | str] = {"layers": cfg.num_hidden_layers}
    for i in range(cfg.num_hidden_layers):
        values |= {
            f"layer.{i}.hidden": cfg.hidden_size, f"layer.{i}.op": "sa-sdp",
            f"layer.{i}.heads": cfg.num_attention_heads, f"layer.{i}.ffn_stacks": 1,
            f"layer.{i}.ffn.0.dim": cfg.intermediate_size,
        }
    return spec.space().config(values).to_dict()


def from_minilm(spec: FlexiBERTSpec = MINILM_SPEC) -> FlexiBERTSupernet:
    """A supernet over ``spec`` whose MiniLM-architecture subnet carries MiniLM's weights.

    MiniLM's embeddings, self-attention, output and feed-forward weights fill the leading
    slices of each layer's ``sa`` and first feed-forward weights (the token-type
    embedding of segment 0 folds into the position table); the head is the identity.
    Weights of other operations, stacks and projections keep their initialisation.

    Raises:
        MissingExtraError: the ``minilm`` extra is missing.
        ValueError: ``spec`` cannot hold MiniLM (too small, no ``sa-sdp``).
    """
    model, _ = load_minilm()
    cfg = model.config
    minilm_config(spec)  # validates that the space contains MiniLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = FlexiBERTSupernet(
            spec, vocab_size=cfg.vocab_size, max_positions=cfg.max_position_embeddings,
            out_dim=cfg.hidden_size, layer_norm_eps=cfg.layer_norm_eps,
        )
    if max(spec.hidden) != cfg.hidden_size or max(spec.ffn_dims) != cfg.intermediate_size:
        raise ValueError(
            f"spec's largest hidden and feed-forward sizes must be MiniLM's "
            f"({cfg.hidden_size}, {cfg.intermediate_size}), got "
            f"({max(spec.hidden)}, {max(spec.ffn_dims)})"
        )
    src = model.state_dict()
    emb = "embeddings."
    with torch.no_grad():
        net.word.weight.copy_(src[emb + "word_embeddings.weight"])
        net.position.weight.copy_(
            src[emb + "position_embeddings.weight"] + src[emb + "token_type_embeddings.weight"][0]
        )
        net.embed_norm.weight.copy_(src[emb + "LayerNorm.weight"])
        net.embed_norm.bias.copy_(src[emb + "LayerNorm.bias"])
        net.head.weight.copy_(torch.eye(cfg.hidden_size))
        net.head.bias.zero_()
        for i in range(cfg.num_hidden_layers):
            layer, pre = net.layers[i], f"encoder.layer.{i}."
            pairs = {
                layer.sa["query"]: "attention.self.query", layer.sa["key"]: "attention.self.key",
                layer.sa["value"]: "attention.self.value",
                layer.sa["out"]: "attention.output.dense",
                layer.norm1: "attention.output.LayerNorm",
                layer.ffn[0]: "intermediate.dense", layer.ffn_out: "output.dense",
                layer.norm2: "output.LayerNorm",
            }
            for module, name in pairs.items():
                module.weight.copy_(src[pre + name + ".weight"])
                module.bias.copy_(src[pre + name + ".bias"])
    net.task_name = WORDPIECE_TASK_NAME
    net.checkpoint_hash = "minilm:" + file_sha256(minilm_dir() / "model.safetensors")
    net.eval()
    net.activate(net.space.largest())
    return net



def sentence_task(path: Path) -> SentenceFileTask:
    """The distillation task on a user's CSV of sentences (``--data``): the built-in
    task's teacher and tokens, split by a hash of the sentence
    (:mod:`nas.supernets.tasks._sentence_files`)."""
    return SentenceFileTask(path, max_tokens=MAX_TOKENS)


def _build_tiny(task: Task) -> Supernet:
    """An untrained supernet over :data:`TINY_SPEC` sized for the distillation task
    (pydoc's paragraphs or a user's sentences): its vocabulary, tokens and teacher."""
    if not isinstance(task, SentenceDistillTask):
        raise TypeError(
            f"the flexibert zoo entry needs a SentenceDistillTask, got {type(task).__name__}"
        )
    return FlexiBERTSupernet(
        TINY_SPEC, vocab_size=task.vocab_size, max_positions=task.max_tokens,
        out_dim=task.teacher_dim,
    )


add_recipe(ZooRecipe(
    name=NAME,
    stem="flexibert-tiny-pydoc",
    task=TASK_NAME,
    build=_build_tiny,
    steps=500,
    batch_size=24,
    lr=2e-3,
    seed=0,
    warmup=50,
    scheme=FlexiBERTSandwich,
    eval_limit=None,
    user_task=sentence_task,
))
