"""Plausible bounds of the figures and seqs of counts messages.

Ingest rejects a counts message beyond them. Aggregation leaves stored
figures beyond them out of speed statistics and zone means, because only a
gateway older than these checks could have stored them.
"""

from __future__ import annotations

from typing import Any

from edge.messages import load_schema_file

_DEFS: dict[str, Any] = load_schema_file("counts.json")["$defs"]

# Largest count of one interval (crossings, entries, occupancy, frames), as
# counts.json declares it. Billions of rows at this bound still sum within
# a signed 64-bit integer.
MAX_COUNT: int = int(_DEFS["count"]["maximum"])

# Largest speed in km/h, as counts.json declares it: twice the highest speed
# limit a node accepts. MAX_COUNT crossings at this speed give a finite sum.
MAX_SPEED_KMH: float = float(_DEFS["speed_kmh"]["maximum"])

# Largest step forward in a node's seq that opens a gap. A step of
# 10,000,000 means that many lost messages in a row: about 19 years of one
# counts message a minute, or 4 months of one message a second. A larger
# step comes from a forged message or a replaced outbox, so it counts as an
# outbox reset instead of a gap, and ingest rejects `merged_seqs` that
# reach further past `seq`.
MAX_SEQ_STEP = 10_000_000
