r"""Gradient-noise laws: worker i returns :math:`g_i = \nabla f_i(x) + Z_i`.

One module per family: ``base`` (the ``Noise`` interface and the symmetric scale families),
``additive`` (Gaussian, Student-t, alpha-stable, affine variance, minibatch), ``streaming``
(fresh Gaussian data for least squares), ``unit`` (the unit
laws :math:`\varepsilon` of Itô chains) and ``markov`` (Markov chains for ``MarkovSGD``).
"""

from sdeopt.noise.additive import (
    AffineVariance,
    Gaussian,
    Minibatch,
    StudentT,
    SymmetricStable,
)
from sdeopt.noise.base import NOISES, Noise, ScaledSymmetricNoise, SymmetricCDFNoise
from sdeopt.noise.markov import FiniteMarkov, GaussianAR1, MarkovNoise, TwoStateMarkov
from sdeopt.noise.streaming import Streaming
from sdeopt.noise.unit import (
    UNIT_LAWS,
    CenteredExponential,
    Rademacher,
    ScaledUniform,
    StandardizedStudentT,
    StandardNormal,
    UnitLaw,
    random_signs,
)
from sdeopt.special import student_t_cdf

__all__ = [
    "NOISES",
    "UNIT_LAWS",
    "AffineVariance",
    "CenteredExponential",
    "FiniteMarkov",
    "Gaussian",
    "GaussianAR1",
    "MarkovNoise",
    "Minibatch",
    "Noise",
    "Rademacher",
    "ScaledSymmetricNoise",
    "ScaledUniform",
    "StandardNormal",
    "StandardizedStudentT",
    "Streaming",
    "StudentT",
    "SymmetricCDFNoise",
    "SymmetricStable",
    "TwoStateMarkov",
    "UnitLaw",
    "random_signs",
    "student_t_cdf",
]
