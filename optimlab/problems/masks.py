"""Where a model's dropout and DropConnect masks come from: a `MaskStream` per model, seeded by
the trial's seed, so a trial's masks are reproducible and a population can draw each member's.

A single trial's model draws its keep-masks (1 with probability 1 − p, else 0) during the
forward, in the order its stochastic layers run, from its own stream's ``torch.Generator``,
never from torch's global generator: two runs of one trial see the same masks, and nothing
else a process does (another trial, an evaluation, a diagnostic) shifts them.

A population (`optimlab.lab.population.BatchedModel`) cannot draw inside ``vmap`` from M
generators, so it draws outside: it records once which masks one forward draws (`recording`:
shapes, probabilities, dtypes, in order), then before every training forward draws member i's
masks from member i's stream in that order (`draw`, exactly the single trial's draws), and
hands the stacked (M, *shape) masks to the vmapped forward, where each layer takes its own
(`supplying`) instead of drawing.

The stream's seed is derived from the trial's seed (`mask_seed`) so that its draws are not
those of the generator that orders the trial's minibatches (same seed, same Mersenne-Twister
stream otherwise).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

#: tells the mask stream's seed apart from the minibatch generator's (``b"mask"``)
_MASK_TAG = 0x6D61736B

#: what one draw is: (shape, dropping probability p, dtype)
Draw = tuple[tuple[int, ...], float, torch.dtype]


def mask_seed(seed: int) -> int:
    """The mask stream's seed for a trial's `seed`: ``SeedSequence([seed, tag])``'s first word
    (a 32-bit integer, independent of the minibatch generator's stream)."""
    return int(np.random.SeedSequence([int(seed), _MASK_TAG]).generate_state(1)[0])


def draw_keep(
    shape: tuple[int, ...], p: float, dtype: torch.dtype, generator: torch.Generator | None
) -> torch.Tensor:
    """A keep-mask: each element 1 with probability 1 − p, else 0 (`generator` None: torch's
    global generator). The one function every draw goes through, so a population's draws are
    the single trial's bit for bit."""
    return torch.empty(shape, dtype=dtype).bernoulli_(1 - p, generator=generator)


class MaskStream:
    """One model's source of keep-masks (shared by all its stochastic layers)."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(mask_seed(seed))
        self._supplied: list[torch.Tensor] | None = None
        self._recorded: list[Draw] | None = None

    def keep(self, like: torch.Tensor, p: float) -> torch.Tensor:
        """A keep-mask of `like`'s shape and dtype: drawn from this stream, or the next of the
        masks being supplied (a population's forward)."""
        if self._supplied is not None:
            if not self._supplied:
                raise RuntimeError("the forward drew more masks than were supplied")
            return self._supplied.pop(0)
        if self._recorded is not None:
            self._recorded.append((tuple(like.shape), p, like.dtype))
        return draw_keep(tuple(like.shape), p, like.dtype, self.generator)

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[Draw]]:
        """Inside the block the forward records its draws (in order) into the yielded list and
        draws from a throwaway generator: this stream's state is left as it was."""
        saved = self.generator.get_state()
        self._recorded = []
        try:
            yield self._recorded
        finally:
            self._recorded = None
            self.generator.set_state(saved)

    @contextlib.contextmanager
    def supplying(self, masks: list[torch.Tensor]) -> Iterator[None]:
        """Inside the block the forward takes `masks` in order instead of drawing; all of them
        must be taken."""
        self._supplied = list(masks)
        try:
            yield
            if self._supplied:
                raise RuntimeError(
                    f"the forward took {len(masks) - len(self._supplied)} of "
                    f"{len(masks)} supplied masks"
                )
        finally:
            self._supplied = None

    def draw(self, plan: list[Draw]) -> list[torch.Tensor]:
        """The masks one training forward of this stream's model draws, given its `plan`."""
        return [draw_keep(shape, p, dtype, self.generator) for shape, p, dtype in plan]


def attach_masks(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every stochastic layer of `model` (those with a ``masks`` attribute: `Dropout`,
    `DropConnectLinear`) one shared `MaskStream` seeded by `seed`; returns `model`."""
    stream = MaskStream(seed)
    for module in model.modules():
        if hasattr(module, "masks"):
            module.masks = stream
    return model


def mask_stream(model: torch.nn.Module) -> MaskStream | None:
    """`model`'s stream (None: no seeded stochastic layer)."""
    for module in model.modules():
        stream = getattr(module, "masks", None)
        if isinstance(stream, MaskStream):
            return stream
    return None
