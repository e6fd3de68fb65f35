"""Format and feature versions that outlive one build: the spool format and the feature history.

Data written by one build is read by later ones (a spool left by a crash, stored files,
legacy batches). Each reader decides from the numbers here whether it can read the data
as it is, or must set it aside:

* ``SPOOL_FORMAT_VERSION``: the collector's write-ahead spool. Version 1 (round 1) had no
  segment header; version 2 starts every segment with a header naming the format, the
  feature version and the feature names, and the row layout of every stream; version 3
  frames every record with a sync marker so a damaged record costs only itself.
* ``FEATURE_VERSIONS``: every feature version ever released, with its feature count and a
  SHA-256 of its names (``names_digest``). A spool or file stamped with a version and
  names this build does not have cannot become valid training rows of this build.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

from backend.ml_engine.feature_store.feature_schema import FEATURE_NAMES, FEATURE_SCHEMA_VERSION

#: write-ahead spool format: 1 = round 1 (no header), 2 = header per segment, state records,
#: 3 = records with a sync marker and a CRC over the length (a damaged record costs only itself)
SPOOL_FORMAT_VERSION = 3


@dataclass(frozen=True)
class FeatureVersion:
    """One released feature version: its number, feature count and ``names_digest`` of its names."""

    version: int
    count: int
    names_sha256: str


def names_digest(names: Sequence[str]) -> str:
    """SHA-256 (hex) of the feature names joined by newlines, in their canonical order."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


#: every feature version released; a new schema version adds an entry here (a test checks
#: that the schema's current names match the entry of its version)
FEATURE_VERSIONS: dict[int, FeatureVersion] = {
    1: FeatureVersion(1, 110, "22e156fc1cb10baf99f901fae921d6d32091cb052d9894beba3081e80d66a95c"),
}


def current_feature_version() -> FeatureVersion:
    """The feature version this build writes, computed from the schema module."""
    return FeatureVersion(FEATURE_SCHEMA_VERSION, len(FEATURE_NAMES), names_digest(FEATURE_NAMES))
