"""The research systems as runtime policies (SEEDS.md): importing this package registers them.

Kinds: ``pang-a1``, ``pang-a2``, ``pang-a1a2`` (:mod:`policies.seeds.pang`), ``trtllm-tuner``
(:mod:`policies.seeds.trtllm`), ``sglang-ratio`` (:mod:`policies.seeds.sglang`),
``bucketserve`` (:mod:`policies.seeds.bucketserve`), ``uellm`` (:mod:`policies.seeds.uellm`)
and ``bca`` (:mod:`policies.seeds.bca`).  See ``docs/policies.md`` for sources and deviations.
"""

from __future__ import annotations

from policies.seeds import bca, bucketserve, pang, sglang, trtllm, uellm
from policies.seeds.bca import BcaPoint, bca_select, bca_sweep

__all__ = ["BcaPoint", "bca", "bca_select", "bca_sweep", "bucketserve", "pang", "sglang", "trtllm", "uellm"]
