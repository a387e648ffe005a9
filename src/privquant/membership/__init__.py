"""Who trained on what: the population pool, the keep matrix, canaries, reference and test sets."""

from privquant.membership.canaries import (
    NO_CANARIES,
    Canaries,
    CanaryConfig,
    choose_canaries,
    plant_in_dataset,
)
from privquant.membership.splits import MembershipSplit, make_split

__all__ = ["NO_CANARIES", "Canaries", "CanaryConfig", "MembershipSplit", "choose_canaries",
           "make_split", "plant_in_dataset"]  # fmt: skip
