"""Process-wide runtime tuning, applied by ``create_app`` (each gunicorn worker) and ``trialscreen screen``.

Garbage collector: a hook call allocates hundreds of thousands of container objects (the parsed request,
one pydantic model per FHIR element, facts), nearly all freed by reference counting. With CPython's default
thresholds (700, 10, 10) the cyclic collector runs about a thousand times during a 10,000-resource call and
walks the growing set of still-live young objects each time: 30-45% of the call's CPU (bench/README.md).
Collecting after every 10,000 net allocations, and the older generations 5x less often, keeps cyclic garbage
bounded while cutting that cost by more than half. Nothing else about memory management changes.
"""

from __future__ import annotations

import gc

__all__ = ["GC_THRESHOLDS", "tune_gc"]

GC_THRESHOLDS = (10_000, 50, 50)


def tune_gc() -> None:
    """Raise the collector's thresholds to GC_THRESHOLDS (never lowers one a host process set higher)."""
    current = gc.get_threshold()
    gc.set_threshold(*(max(c, t) for c, t in zip(current, GC_THRESHOLDS, strict=True)))
