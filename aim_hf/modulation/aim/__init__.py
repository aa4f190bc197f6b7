"""AIM (adaptive intra-network modulation): the method (`method`), its options (`options`), its
class prototypes (`prototypes`), depth scores and strengths (`strengths`) and the Auxiliary Blocks'
unit masks (`masking`). docs/methods/aim.md describes it."""

from .method import AIM
from .options import AIMOptions

__all__ = ["AIM", "AIMOptions"]
