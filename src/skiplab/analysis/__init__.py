"""Analyses of skip connections: gradient flow, lesions and paths, residual responses,
shattered gradients, loss landscapes and the identity construction, complexity tables.

The functions of :mod:`~skiplab.analysis.responses` (He et al. 2015, Section 4.2),
:mod:`~skiplab.analysis.shattering` (Balduzzi et al. 2017) and
:mod:`~skiplab.analysis.landscape` (Li et al. 2018) and :mod:`~skiplab.analysis.identity`
(He et al. 2015, Section 1) are importable from here.
"""

from skiplab.analysis.identity import (
    deepen_with_identity,
    max_output_difference,
    set_unit_to_identity_,
)
from skiplab.analysis.landscape import (
    HessianEigen,
    LossSurface,
    dataset_loss,
    filter_normalize,
    filter_normalized_direction,
    hessian_extreme_eigenvalues,
    hessian_vector_product,
    loss_surface,
)
from skiplab.analysis.responses import UnitResponse, branch_output_layer, residual_responses
from skiplab.analysis.shattering import (
    LineGradients,
    Shattering,
    gradient_autocorrelation,
    gradient_shattering,
    gradients_along_line,
    spectral_whiteness,
)

__all__ = [
    "HessianEigen",
    "LineGradients",
    "LossSurface",
    "Shattering",
    "UnitResponse",
    "branch_output_layer",
    "dataset_loss",
    "deepen_with_identity",
    "filter_normalize",
    "filter_normalized_direction",
    "gradient_autocorrelation",
    "gradient_shattering",
    "gradients_along_line",
    "hessian_extreme_eigenvalues",
    "hessian_vector_product",
    "loss_surface",
    "max_output_difference",
    "residual_responses",
    "set_unit_to_identity_",
    "spectral_whiteness",
]
