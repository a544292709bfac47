"""The research systems as runtime policies (SEEDS.md): importing this package registers them.

Kinds: ``pang-a1``, ``pang-a2``, ``pang-a1a2`` (:mod:`policies.baselines.pang`), ``trtllm-tuner``
(:mod:`policies.baselines.trtllm`), ``sglang-ratio`` (:mod:`policies.baselines.sglang`),
``bucketserve`` (:mod:`policies.baselines.bucketserve`), ``uellm`` (:mod:`policies.baselines.uellm`)
and ``bca`` (:mod:`policies.baselines.bca`).  See ``docs/policies.md`` for sources and deviations.
"""

from __future__ import annotations

from policies.baselines import bca, bucketserve, pang, sglang, trtllm, uellm
from policies.baselines.bca import BcaPoint, bca_select, bca_sweep

__all__ = ["BcaPoint", "bca", "bca_select", "bca_sweep", "bucketserve", "pang", "sglang", "trtllm", "uellm"]
