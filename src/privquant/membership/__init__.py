"""Who trained on what: the population pool, the keep matrix, reference and test sets."""

from privquant.membership.splits import MembershipSplit, make_split

__all__ = ["MembershipSplit", "make_split"]
