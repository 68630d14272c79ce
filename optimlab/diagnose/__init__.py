"""Why is training slow or stuck? Measurements that name the failure modes.

* `lr_find` — the learning-rate range test: too small or too large a learning rate, and
  `curve_verdict`: how far to trust its suggestion;
* `gradient_flow` — vanishing or exploding gradients, dead ReLUs, with advice;
* `analyze_hessian` (and `HessianOperator`, `eigenvalues`, `hutchinson_trace`,
  `spectral_density`) — curvature: λmax, λmin (saddle points), trace, condition number;
* `slice_1d`, `slice_2d`, `training_path`, `path_slice` — loss-landscape slices;
* `run_diagnosis` — all of them on a named problem, with an HTML page.

Every function works on any ``torch.nn.Module``, data given as ``(inputs, targets)`` tensors
or an iterable of batches, a ``loss_fn(output, target)`` and any ``torch.optim.Optimizer``;
models and optimizers are restored after each measurement.
"""

from optimlab.diagnose.gradflow import (
    Architecture,
    GradFlowResult,
    LayerFlow,
    describe_architecture,
    gradient_flow,
)
from optimlab.diagnose.hessian import (
    HessianOperator,
    HessianResult,
    SecondDerivativeError,
    SpectralDensity,
    analyze_hessian,
    eigenvalues,
    hutchinson_trace,
    lanczos,
    spectral_density,
)
from optimlab.diagnose.lr_find import (
    CurveVerdict,
    LRFindResult,
    LRSuggestion,
    curve_verdict,
    lr_find,
    suggest_lr,
)
from optimlab.diagnose.run import CHECKS, diagnose_model, run_diagnosis
from optimlab.diagnose.slices import (
    PathSlice,
    Slice1D,
    Slice2D,
    filter_normalized_direction,
    path_slice,
    slice_1d,
    slice_2d,
    training_path,
)

__all__ = [
    "CHECKS",
    "Architecture",
    "CurveVerdict",
    "GradFlowResult",
    "HessianOperator",
    "HessianResult",
    "LRFindResult",
    "LRSuggestion",
    "LayerFlow",
    "PathSlice",
    "SecondDerivativeError",
    "Slice1D",
    "Slice2D",
    "SpectralDensity",
    "analyze_hessian",
    "curve_verdict",
    "describe_architecture",
    "diagnose_model",
    "eigenvalues",
    "filter_normalized_direction",
    "gradient_flow",
    "hutchinson_trace",
    "lanczos",
    "lr_find",
    "path_slice",
    "run_diagnosis",
    "slice_1d",
    "slice_2d",
    "spectral_density",
    "suggest_lr",
    "training_path",
]
