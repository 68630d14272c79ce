"""``tiny-lm``: a small causal transformer language model on a seeded synthetic language.

The data. A "language" over `vocab` tokens is an order-2 Markov chain: each context (a, b) of
the two previous tokens allows `branching` next tokens, drawn without replacement, with
probabilities drawn from a symmetric Dirichlet(1). Both tables come from
``numpy.random.default_rng(language_seed)``, and the text (one long stream per split, cut into
windows of ``context + 1`` tokens) from the same generator afterwards, so the data are the same
bytes on every machine and nothing is downloaded. The best possible loss is the chain's
conditional entropy, about log(branching) nats per token less the Dirichlet's unevenness
(`oracle_loss` computes it on a split from the true table), far below log(vocab), the loss of a
uniform guess; a model has to attend to the two previous tokens to get there.

The model. Token and learned position embeddings, `depth` pre-norm blocks (causal multi-head
self-attention, then a 4×width GELU MLP, each with a residual connection), a final LayerNorm
and a linear head to the vocabulary. Every weight matrix of the blocks is a plain 2-D
``nn.Linear`` weight (q, k, v and output projections kept apart), the layout Muon's "hidden
matrices" rule expects; embeddings, head, biases and LayerNorm gains are the other parameters.

The loss is the mean cross-entropy per predicted token in nats; perplexity = exp(loss). The
task is ``"language-model"``: compare ranks it by test loss (lower is better) and reports the
perplexity beside it.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from optimlab.problems import models
from optimlab.problems.base import Problem, Split

#: the generator seed of the language and its text (fixed: the problem is one data set)
LANGUAGE_SEED = 1234
#: sequences per split (train, val, test)
SPLIT_SEQUENCES = {"train": 2048, "val": 256, "test": 256}


@functools.cache
def language(vocab: int, branching: int) -> tuple[np.ndarray, np.ndarray]:
    """The order-2 chain: ``next_tokens[a, b]`` (branching allowed tokens after a, b) and
    ``probabilities[a, b]`` (their probabilities, summing to 1)."""
    rng = np.random.default_rng([LANGUAGE_SEED, vocab, branching])
    next_tokens = np.empty((vocab, vocab, branching), dtype=np.int64)
    for a in range(vocab):
        for b in range(vocab):
            next_tokens[a, b] = rng.choice(vocab, size=branching, replace=False)
    probabilities = rng.dirichlet(np.ones(branching), size=(vocab, vocab))
    return next_tokens, probabilities


def generate(vocab: int, branching: int, length: int, seed: int) -> np.ndarray:
    """`length` tokens of the chain, started from two uniform tokens, from ``default_rng(seed)``:
    each step samples the next token's position among the allowed ones by inverse CDF."""
    next_tokens, probabilities = language(vocab, branching)
    cumulative = np.cumsum(probabilities, axis=-1)
    rng = np.random.default_rng([LANGUAGE_SEED, seed, vocab, branching])
    uniforms = rng.random(length)
    tokens = np.empty(length, dtype=np.int64)
    tokens[:2] = rng.integers(0, vocab, size=2)
    for i in range(2, length):
        a, b = tokens[i - 2], tokens[i - 1]
        choice = min(int(np.searchsorted(cumulative[a, b], uniforms[i])), branching - 1)
        tokens[i] = next_tokens[a, b, choice]
    return tokens


@functools.cache
def splits(vocab: int, branching: int, context: int) -> dict[str, Split]:
    """Train/val/test as (inputs, targets) of shape (sequences, context): each split is one
    stream (its own seed) cut into windows of context + 1 tokens; targets are the inputs shifted
    by one."""
    out = {}
    for index, (name, sequences) in enumerate(SPLIT_SEQUENCES.items()):
        stream = generate(vocab, branching, sequences * (context + 1), seed=index)
        windows = torch.from_numpy(stream.reshape(sequences, context + 1))
        out[name] = (windows[:, :-1].contiguous(), windows[:, 1:].contiguous())
    return out


def oracle_loss(vocab: int, branching: int, split: Split) -> float:
    """The mean cross-entropy (nats/token) of the true chain on `split`'s targets, for the
    positions whose two previous tokens are inside the window (from the third target on): the
    loss no model can beat there."""
    next_tokens, probabilities = language(vocab, branching)
    inputs, targets = (t.numpy() for t in split)
    a, b, target = inputs[:, :-1], inputs[:, 1:], targets[:, 1:]
    hits = next_tokens[a, b] == target[..., None]
    return float(-np.log((probabilities[a, b] * hits).sum(-1)).mean())


class Block(nn.Module):
    """Pre-norm transformer block: x + Attention(LN(x)), then x + MLP(LN(x)); causal.

    Dropout (p = `dropout`) on the attention weights and on each residual branch's output draws
    its masks from the model's seeded `MaskStream` (`optimlab.problems.masks`), as the other
    problems' dropout: a trial is reproducible and a population can draw each member's masks.
    With dropout in training, attention is written out, softmax(q kᵀ/√d + causal) ⊙ M/(1 − p)
    then times v (torch's ``scaled_dot_product_attention`` draws its dropout from the global
    generator); without dropout it is ``scaled_dot_product_attention`` itself.
    """

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(width)
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.up = nn.Linear(width, 4 * width)
        self.down = nn.Linear(4 * width, width)
        self.drop = models.Dropout(dropout)
        self.attention_drop = models.Dropout(dropout)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        return x.view(batch, length, self.heads, width // self.heads).transpose(1, 2)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if not self.training or self.dropout == 0:
            return nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        length = q.shape[-2]
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        future = torch.ones(length, length, dtype=torch.bool).triu(1)
        weights = torch.softmax(scores.masked_fill(future, -math.inf), dim=-1)
        return self.attention_drop(weights) @ v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        q, k, v = (self._split_heads(f(h)) for f in (self.query, self.key, self.value))
        attended = self._attend(q, k, v)
        x = x + self.drop(self.out(attended.transpose(1, 2).reshape(x.shape)))
        return x + self.drop(self.down(nn.functional.gelu(self.up(self.norm2(x)))))


class TinyLM(nn.Module):
    """Embeddings → `depth` causal blocks → LayerNorm → linear head; (batch, T) → (batch, T, V)."""

    def __init__(
        self, vocab: int, context: int, width: int, depth: int, heads: int, dropout: float
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.tokens(tokens) + self.positions(positions)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every predicted token: logits (..., V), targets (...)."""
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def build(o: dict[str, Any], penalty: Any = None) -> Problem:
    """The `Problem` for resolved options `o` (see the registry for each option)."""
    if o["width"] % o["heads"]:
        raise ValueError(
            f"problem 'tiny-lm': width={o['width']} is not divisible by heads={o['heads']}; "
            f"allowed: a width that is a multiple of heads"
        )
    if o["branching"] > o["vocab"]:
        raise ValueError(
            f"problem 'tiny-lm': branching={o['branching']} is larger than vocab={o['vocab']}; "
            f"allowed: branching <= vocab"
        )
    data = splits(o["vocab"], o["branching"], o["context"])

    def builder() -> nn.Module:
        return TinyLM(o["vocab"], o["context"], o["width"], o["depth"], o["heads"], o["dropout"])

    return Problem(
        name="tiny-lm",
        options=o,
        train=data["train"],
        val=data["val"],
        test=data["test"],
        build_model=lambda seed: models.seeded(builder, seed),
        loss_fn=token_cross_entropy,
        batch_size=o["batch_size"],
        task="language-model",
        penalty=penalty,
        early_stopping=o["early_stopping"],
        default_steps=500,
    )


def uniform_loss(vocab: int) -> float:
    """log(vocab): the loss of a uniform guess (an untrained model sits near it)."""
    return math.log(vocab)
