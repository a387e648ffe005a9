"""The home of every defense: config classes registered with a stage and a handler.

``VariantConfig(name, steps=[...])`` composes steps from any stages (train -> transform ->
output); :func:`apply_defense` applies them. Register a new method with
:func:`register_defense` and it is usable from YAML, the CLI and ``audit_model``.
"""

from privquant.defenses import (  # noqa: F401 (register methods)
    bit_allocation,
    calibration,
    distillation,
    dp_sgd,
    hamp,
    output,
    quantization,
    rounding,
    training,
)
from privquant.defenses.apply import apply_defense, apply_outputs, apply_transforms, train_model
from privquant.defenses.base import (
    DEFENSES,
    STAGE_ORDER,
    DefenseConfig,
    DefenseContext,
    RegisteredDefense,
    Stage,
    defense_names,
    get_defense,
    register_defense,
)
from privquant.defenses.bit_allocation import PrivacyBitAllocation, allocate_bits
from privquant.defenses.calibration import PrivacyCalibration, internal_audit
from privquant.defenses.distillation import ReferenceDistill, SplitDistill
from privquant.defenses.dp_sgd import DPSGD
from privquant.defenses.hamp import HAMP, HAMPOutput
from privquant.defenses.output import CoarsePosterior, OutputCoarsening
from privquant.defenses.quantization import PTQ, QAT, AdaRound
from privquant.defenses.rounding import PrivacyRounding, privacy_rounding
from privquant.defenses.training import (
    EarlyStopping,
    LabelSmoothing,
    RelaxLossDefense,
    WeightDecay,
    WithReferenceRows,
)
from privquant.defenses.variant import VariantConfig, format_location

__all__ = [
    "DEFENSES",
    "DPSGD",
    "HAMP",
    "HAMPOutput",
    "EarlyStopping",
    "WeightDecay",
    "PTQ",
    "PrivacyBitAllocation",
    "PrivacyCalibration",
    "PrivacyRounding",
    "QAT",
    "STAGE_ORDER",
    "AdaRound",
    "CoarsePosterior",
    "DefenseConfig",
    "DefenseContext",
    "LabelSmoothing",
    "OutputCoarsening",
    "ReferenceDistill",
    "RelaxLossDefense",
    "RegisteredDefense",
    "SplitDistill",
    "Stage",
    "VariantConfig",
    "WithReferenceRows",
    "apply_defense",
    "apply_outputs",
    "allocate_bits",
    "apply_transforms",
    "defense_names",
    "format_location",
    "get_defense",
    "internal_audit",
    "privacy_rounding",
    "register_defense",
    "train_model",
]
