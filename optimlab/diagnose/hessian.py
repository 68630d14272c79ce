"""Curvature of the loss: the Hessian H = ∇²L(θ) of a model's loss, never formed, only applied.

* `HessianOperator` computes Hessian-vector products by double backpropagation (Pearlmutter
  1994): with g(θ) = ∇L(θ) built once with ``create_graph=True``, H·v = ∇_θ (g(θ)·v). One product
  costs about two backward passes; the operator counts them.
* `lanczos` runs the Lanczos iteration with full reorthogonalization: after m products it has an
  orthonormal basis Q_m of the Krylov space span{q, Hq, …, H^{m−1}q} and the tridiagonal
  T_m = Q_mᵀ H Q_m. T_m's eigenvalues (Ritz values) approximate H's extreme eigenvalues — at
  *both* ends of the spectrum — and ‖H y − θ y‖ = β_m·|s_m| (the last component of T_m's
  eigenvector times the next off-diagonal) bounds each Ritz value's error, which is how we know
  when to stop and how far to trust λmin.
* `eigenvalues`: the k largest eigenvalues and the smallest one. A negative λmin (certified: the
  Ritz value plus its error bound is still below zero) means negative curvature — a saddle
  point, not a minimum — which power iteration on H (it finds the largest |λ|) can miss.
* `hutchinson_trace`: tr H = E[zᵀHz] for Rademacher z (Hutchinson 1989), with its standard error.
* `spectral_density`: stochastic Lanczos quadrature (Lin, Saad & Yang 2016; Ghorbani, Krishnan &
  Xiao 2019): for a random unit vector v, vᵀ f(H) v ≈ Σ_j τ_j f(θ_j) with Ritz values θ_j and
  weights τ_j = (first component of T_m's j-th eigenvector)²; averaging Gaussian bumps
  Σ_j τ_j·N(λ; θ_j, σ²) over a few vectors estimates the density of eigenvalues.
* the condition number κ = λmax/λmin, defined only when H is positive definite.

Mode: by default the loss is evaluated in **eval** mode (dropout off, batch norm with its running
statistics), so H is the curvature of a fixed, deterministic function; ``mode="train"`` uses batch
statistics (and one fixed dropout mask: the graph is built once and reused by every product).
Buffers such as batch-norm running statistics are restored afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from optimlab.diagnose.common import (
    Data,
    LossFn,
    Progress,
    check_scalar_loss,
    flatten,
    full_batch,
    trainable_parameters,
    unflatten,
)

MODES = ("eval", "train")
MODE_NOTES = {
    "eval": "eval mode: dropout off, batch norm uses its running statistics",
    "train": "train mode: batch norm uses batch statistics, one fixed dropout mask",
}


class SecondDerivativeError(RuntimeError):
    """An operation in the model or loss cannot be differentiated twice."""


class HessianOperator:
    """v ↦ H·v for the loss of `model` on one fixed batch (see the module docstring).

    Args:
        model: the network; its parameters that require grad are the variables of H.
        data: ``(inputs, targets)`` or an iterable of batches; the first `max_samples` examples
            form the batch on which the loss is evaluated (all of them if None).
        loss_fn: ``(output, target) -> scalar``.
        mode: ``"eval"`` (default) or ``"train"``.

    Vectors are flat float64 tensors of length `dim` (the parameters concatenated in
    ``model.parameters()`` order); products are computed in the parameters' dtype.
    """

    def __init__(
        self,
        model: nn.Module,
        data: Data,
        loss_fn: LossFn,
        *,
        mode: str = "eval",
        max_samples: int | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}; allowed: {', '.join(MODES)}")
        self.params = trainable_parameters(model)
        self.dim = sum(p.numel() for p in self.params)
        self.mode = mode
        self.calls = 0
        x, y = full_batch(data, max_samples)
        self.samples = len(x)
        modes = {name: m.training for name, m in model.named_modules()}
        # A train-mode forward pass updates batch-norm running statistics in place, and the
        # graph keeps references to them: it runs on copies, the originals stay untouched.
        originals = [
            (module, name, buffer)
            for module in model.modules()
            for name, buffer in module._buffers.items()
            if buffer is not None
        ]
        try:
            for module, name, buffer in originals:
                module._buffers[name] = buffer.clone()
            model.train(mode == "train")
            with torch.enable_grad():
                self.loss = check_scalar_loss(loss_fn(model(x), y))
                if not self.loss.requires_grad:
                    raise ValueError(
                        "loss_fn returned a loss that does not depend on the model's parameters "
                        "(no gradient graph); did the model or loss detach it?"
                    )
                self.grads = torch.autograd.grad(
                    self.loss, self.params, create_graph=True, allow_unused=True
                )
            self._check_flat_gradients(model, x, y, loss_fn)
        finally:
            for module, name, buffer in originals:
                module._buffers[name] = buffer
            for name, module in model.named_modules():
                module.training = modes[name]
        # Gradients that do not depend on the parameters (a loss linear in them) contribute a
        # zero block to H; only the others are differentiated again.
        self._curved = [i for i, g in enumerate(self.grads) if g is not None and g.requires_grad]
        self.gradient = flatten(
            torch.zeros_like(p) if g is None else g.detach()
            for p, g in zip(self.params, self.grads)
        ).double()

    def _check_flat_gradients(self, model: nn.Module, x: Any, y: Any, loss_fn: LossFn) -> None:
        """A gradient without a second-order graph means a zero block of H — true for a loss
        linear in those parameters, silently false when an operation computed its backward
        outside autograd (a custom Function marked once_differentiable). Tell them apart with
        one gradient at slightly moved weights: a truly flat gradient does not move."""
        flat = [i for i, g in enumerate(self.grads) if g is not None and not g.requires_grad]
        if not flat:
            return
        generator = torch.Generator().manual_seed(12345)
        saved = [p.detach().clone() for p in self.params]
        try:
            with torch.no_grad():
                for p in self.params:
                    scale = 1e-2 * (float(p.detach().abs().mean()) + 1e-3)
                    noise = torch.randn(p.shape, generator=generator, dtype=p.dtype)
                    p.add_(noise.to(p.device) * scale)
            with torch.enable_grad():
                moved = torch.autograd.grad(
                    loss_fn(model(x), y).reshape(()), self.params, allow_unused=True
                )
        finally:
            with torch.no_grad():
                for p, value in zip(self.params, saved):
                    p.copy_(value)
        names = {id(p): n for n, p in model.named_parameters()}
        for i in flat:
            before, after = self.grads[i].detach(), moved[i]
            change = float((after - before).norm()) if after is not None else 0.0
            if change > 1e-4 * float(before.norm()) + 1e-7:
                raise SecondDerivativeError(
                    f"the gradient of parameter {names.get(id(self.params[i]), i)!r} changes with "
                    f"the weights but has no second-order graph: an operation in the model or "
                    f"the loss cannot be differentiated twice (a custom autograd.Function marked "
                    f"once_differentiable, or a backward computed outside autograd), so its "
                    f"Hessian cannot be computed by double backpropagation"
                )

    def __call__(self, vector: torch.Tensor) -> torch.Tensor:
        """H·v for a flat vector v of length `dim`; float64 result."""
        if vector.shape != (self.dim,):
            raise ValueError(f"vector has shape {tuple(vector.shape)}; expected ({self.dim},)")
        self.calls += 1
        pieces = unflatten(vector, self.params)
        out = [torch.zeros_like(p) for p in self.params]
        if self._curved:
            try:
                products = torch.autograd.grad(
                    [self.grads[i] for i in self._curved],
                    self.params,
                    grad_outputs=[pieces[i] for i in self._curved],
                    retain_graph=True,
                    allow_unused=True,
                )
            except RuntimeError as error:
                raise SecondDerivativeError(
                    "the Hessian-vector product needs the second derivative of the loss, but an "
                    "operation in the model or the loss cannot be differentiated twice (a custom "
                    "autograd.Function marked once_differentiable, or an op whose double backward "
                    f"PyTorch does not implement). PyTorch said: {error}"
                ) from error
            out = [torch.zeros_like(p) if h is None else h for p, h in zip(self.params, products)]
        return flatten(h.detach() for h in out).double()


@dataclass
class Lanczos:
    """The result of `lanczos`: T = tridiag(beta, alpha, beta), basis Q (rows), and the norm of
    the residual after the last step (``beta_next``; 0 if the Krylov space became invariant)."""

    alpha: torch.Tensor
    beta: torch.Tensor
    basis: torch.Tensor
    beta_next: float

    def tridiagonal(self) -> torch.Tensor:
        m = len(self.alpha)
        t = torch.diag(self.alpha)
        if m > 1:
            t += torch.diag(self.beta, 1) + torch.diag(self.beta, -1)
        return t

    def ritz(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Ritz values (ascending), their error bounds β_m·|s_{m,j}|, and the quadrature
        weights τ_j = s_{1,j}² (the first components of T's eigenvectors)."""
        values, vectors = torch.linalg.eigh(self.tridiagonal())
        bounds = self.beta_next * vectors[-1].abs()
        return values, bounds, vectors[0].square()


def lanczos(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    iterations: int,
    *,
    stop: Callable[[Lanczos], bool] | None = None,
) -> Lanczos:
    """`iterations` steps of Lanczos from `start` with full reorthogonalization (twice, "twice
    is enough"), in float64. `stop(partial_result)` is asked after every step and ends the
    iteration early when it returns True; so does an invariant Krylov space (β ≈ 0)."""
    q = start.double() / start.double().norm()
    basis = [q]
    alphas: list[torch.Tensor] = []
    betas: list[torch.Tensor] = []
    beta_next = 0.0
    for j in range(iterations):
        w = matvec(basis[j])
        alpha = torch.dot(w, basis[j])
        alphas.append(alpha)
        stacked = torch.stack(basis)
        # Full reorthogonalization against every previous vector: without it, rounding makes
        # converged Ritz values reappear as spurious copies ("ghost" eigenvalues).
        for _ in range(2):
            w = w - stacked.T @ (stacked @ w)
        beta = w.norm()
        beta_next = float(beta)
        scale = max(float(alpha.abs()), float(betas[-1]) if betas else 0.0, 1e-300)
        result = Lanczos(
            torch.stack(alphas),
            torch.stack(betas) if betas else torch.zeros(0, dtype=torch.float64),
            torch.stack(basis),
            beta_next,
        )
        if beta_next <= 1e-10 * scale or j == iterations - 1 or (stop is not None and stop(result)):
            if beta_next <= 1e-10 * scale:
                result.beta_next = 0.0
            return result
        betas.append(beta)
        basis.append(w / beta)
    raise AssertionError("unreachable")  # pragma: no cover - the loop always returns


def _start_vector(dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(dim, generator=generator, dtype=torch.float64)


@dataclass
class Eigenvalues:
    """Extreme eigenvalues from one Lanczos run: `top` (descending, k of them) and `smallest`,
    each with an error bound; `hvps` products were used; `converged` if every bound met `tol`."""

    top: list[float]
    top_bounds: list[float]
    smallest: float
    smallest_bound: float
    hvps: int
    converged: bool
    #: the Lanczos run (basis and tridiagonal); `hutchinson_trace` can deflate it
    lanczos: Lanczos | None = field(repr=False, default=None)


def eigenvalues(
    operator: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    k: int = 5,
    *,
    smallest: bool = True,
    max_iter: int = 100,
    tol: float = 1e-3,
    seed: int = 0,
) -> Eigenvalues:
    """The k largest eigenvalues of the symmetric operator (and its smallest one) by Lanczos.

    Stops as soon as the error bound of each of the top k Ritz values is below `tol`·|θ| and, if
    `smallest`, the bound of the smallest one is below `tol`·|θ_min|, or after `max_iter`
    products (at most `dim`: then the Krylov space is the whole space and the values exact). The
    top of a Hessian's spectrum is well separated and converges in a few dozen products; its
    bottom is usually a dense cluster near zero, so λmin typically uses all `max_iter` and comes
    with its error bound.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k={k!r}; allowed: an integer >= 1")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter={max_iter!r}; allowed: an integer >= 1")
    if not isinstance(tol, int | float) or not tol > 0:
        raise ValueError(f"tol={tol!r}; allowed: a number > 0")
    k = min(k, dim)
    iterations = min(max_iter, dim)

    def converged(result: Lanczos) -> bool:
        if len(result.alpha) < k:
            return False
        values, bounds, _ = result.ritz()
        scale = float(values.abs().max())
        top_ok = all(
            float(bounds[-1 - i]) <= tol * max(abs(float(values[-1 - i])), 1e-12 * scale)
            for i in range(k)
        )
        low_ok = not smallest or float(bounds[0]) <= tol * abs(float(values[0]))
        return top_ok and low_ok

    result = lanczos(operator, _start_vector(dim, seed), iterations, stop=converged)
    values, bounds, _ = result.ritz()
    k = min(k, len(values))
    return Eigenvalues(
        top=[float(values[-1 - i]) for i in range(k)],
        top_bounds=[float(bounds[-1 - i]) for i in range(k)],
        smallest=float(values[0]),
        smallest_bound=float(bounds[0]),
        hvps=len(result.alpha),
        converged=converged(result) or result.beta_next == 0.0,
        lanczos=result,
    )


def hutchinson_trace(
    operator: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    samples: int = 50,
    seed: int = 0,
    *,
    deflate: Lanczos | None = None,
) -> tuple[float, float]:
    """Hutchinson's estimate of tr H: the mean of zᵀHz over `samples` Rademacher vectors z
    (entries ±1, so E[zzᵀ] = I), and its standard error s/√samples.

    With `deflate`, a Lanczos run found independently of z (the one of `eigenvalues`, whose
    orthonormal basis Q holds the top eigenvectors), the trace splits exactly as
    tr H = tr(QHQᵀ) + tr(PHP), P = I − QᵀQ: the first term is tr T = Σ α_j, known without
    another product (QHQᵀ = T under full reorthogonalization), and Hutchinson
    estimates only the second with z ← Pz (the idea of Hutch++, Meyer et al. 2021). The few
    large eigenvalues that dominate zᵀHz's variance are gone, so the error shrinks a lot; a
    basis of the whole space leaves nothing to estimate.
    """
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise ValueError(f"samples={samples!r}; allowed: an integer >= 2")
    exact, basis = 0.0, None
    if deflate is not None:
        basis = deflate.basis
        exact = float(deflate.alpha.sum())
        if len(basis) >= dim:
            return exact, 0.0  # the basis spans the whole space: tr T is tr H
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(samples):
        z = torch.randint(0, 2, (dim,), generator=generator, dtype=torch.float64) * 2 - 1
        if basis is not None:
            z = z - basis.T @ (basis @ z)
        values.append(float(torch.dot(z, operator(z))))
    estimates = torch.tensor(values, dtype=torch.float64)
    return exact + float(estimates.mean()), float(estimates.std() / math.sqrt(samples))


@dataclass
class SpectralDensity:
    """The smoothed eigenvalue density on `grid` (integrates to 1), the Ritz `nodes` and
    quadrature `weights` of each run, and the kernel width `sigma`."""

    grid: list[float]
    density: list[float]
    nodes: list[list[float]]
    weights: list[list[float]]
    sigma: float
    hvps: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def spectral_density(
    operator: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    *,
    runs: int = 3,
    iterations: int = 40,
    grid_size: int = 400,
    sigma: float | None = None,
    seed: int = 0,
) -> SpectralDensity:
    """Stochastic Lanczos quadrature (see the module docstring). `sigma` defaults to 1% of the
    width of the spectrum found; the grid extends 5σ beyond the extreme Ritz values."""
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs={runs!r}; allowed: an integer >= 1")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations={iterations!r}; allowed: an integer >= 1")
    nodes, weights, hvps = [], [], 0
    for run in range(runs):
        # Rademacher start vectors, as for Hutchinson: E[vvᵀ] = I/dim after normalization.
        generator = torch.Generator().manual_seed(seed + 1000 + run)
        start = torch.randint(0, 2, (dim,), generator=generator, dtype=torch.float64) * 2 - 1
        result = lanczos(operator, start, min(iterations, dim))
        values, _, tau = result.ritz()
        hvps += len(result.alpha)
        nodes.append(values)
        weights.append(tau)
    all_nodes = torch.cat(nodes)
    low, high = float(all_nodes.min()), float(all_nodes.max())
    width = high - low if high > low else max(abs(high), 1.0)
    sigma = 0.01 * width if sigma is None else float(sigma)
    if not sigma > 0:
        raise ValueError(f"sigma={sigma!r}; allowed: a number > 0")
    grid = torch.linspace(low - 5 * sigma, high + 5 * sigma, grid_size, dtype=torch.float64)
    density = torch.zeros_like(grid)
    for values, tau in zip(nodes, weights):
        bumps = torch.exp(-0.5 * ((grid[:, None] - values[None, :]) / sigma) ** 2)
        density += (bumps * tau[None, :]).sum(1) / (sigma * math.sqrt(2 * math.pi))
    density /= runs
    return SpectralDensity(
        grid=grid.tolist(),
        density=density.tolist(),
        nodes=[v.tolist() for v in nodes],
        weights=[t.tolist() for t in weights],
        sigma=sigma,
        hvps=hvps,
    )


@dataclass
class HessianResult:
    """Everything `analyze_hessian` measured. ``condition_number`` is λmax/λmin when H is
    positive definite, else None; ``negative_curvature`` is True when λmin is certified
    negative (λmin + its error bound < 0, beyond rounding)."""

    lambda_max: float
    lambda_min: float
    lambda_min_bound: float
    top_eigenvalues: list[float]
    top_bounds: list[float]
    trace: float
    trace_stderr: float
    condition_number: float | None
    negative_curvature: bool
    mode: str
    mode_note: str
    parameters: int
    samples: int
    loss: float
    gradient_norm: float
    hvps: dict[str, int]
    converged: bool
    density: SpectralDensity | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["density"] = None if self.density is None else self.density.to_json()
        return out


def analyze_hessian(
    model: nn.Module,
    data: Data,
    loss_fn: LossFn,
    *,
    k: int = 5,
    mode: str = "eval",
    max_samples: int | None = 1000,
    max_iter: int = 100,
    tol: float = 1e-3,
    trace_samples: int = 50,
    density: bool = True,
    density_runs: int = 3,
    density_iter: int = 40,
    seed: int = 0,
    progress: Progress | None = None,
) -> HessianResult:
    """Top-k and smallest eigenvalues, trace, condition number and spectral density of the
    Hessian of `loss_fn` at the model's current weights, on (at most `max_samples` of) `data`."""
    operator = HessianOperator(model, data, loss_fn, mode=mode, max_samples=max_samples)
    if progress is not None:
        progress(f"hessian: {operator.dim} parameters, {operator.samples} examples, {mode} mode")
    eig = eigenvalues(operator, operator.dim, k, max_iter=max_iter, tol=tol, seed=seed)
    hvps = {"eigenvalues": eig.hvps}
    if progress is not None:
        progress(f"hessian: λmax={eig.top[0]:.4g} λmin={eig.smallest:.4g} ({eig.hvps} HVPs)")
        # the trace and the density take as many HVPs again and more: say so, or the run
        # goes silent for minutes on a deep net
        progress(f"hessian: trace ({trace_samples} Hutchinson samples)")
    trace, stderr = hutchinson_trace(
        operator, operator.dim, trace_samples, seed=seed + 1, deflate=eig.lanczos
    )
    hvps["trace"] = trace_samples
    sld = None
    if density:
        if progress is not None:
            progress(
                f"hessian: spectral density ({density_runs} runs × {density_iter} Lanczos steps)"
            )
        sld = spectral_density(
            operator, operator.dim, runs=density_runs, iterations=density_iter, seed=seed + 2
        )
        hvps["density"] = sld.hvps
    lambda_max, lambda_min = eig.top[0], eig.smallest
    scale = max(abs(lambda_max), abs(lambda_min), 1e-300)
    negative = lambda_min + eig.smallest_bound < 0 and lambda_min < -1e-6 * scale
    positive_definite = lambda_min - eig.smallest_bound > 0
    return HessianResult(
        lambda_max=lambda_max,
        lambda_min=lambda_min,
        lambda_min_bound=eig.smallest_bound,
        top_eigenvalues=eig.top,
        top_bounds=eig.top_bounds,
        trace=trace,
        trace_stderr=stderr,
        condition_number=lambda_max / lambda_min if positive_definite else None,
        negative_curvature=negative,
        mode=mode,
        mode_note=MODE_NOTES[mode],
        parameters=operator.dim,
        samples=operator.samples,
        loss=float(operator.loss.detach()),
        gradient_norm=float(operator.gradient.norm()),
        hvps=hvps,
        converged=eig.converged,
        density=sld,
    )
