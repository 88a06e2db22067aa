"""Progress of a file run, so a node killed mid-file resumes instead of recounting.

A file source is processed once. After each counts message is stored in
the durable outbox, the node records the stream time of the first frame of
the next interval. A node that restarts on the same file with the same
analytics settings skips to that point, warms its tracker up on the few
seconds before it without counting, and counts on from there, so the
gateway's totals equal those of an undisturbed run. A finished run is
marked complete, and running it again only drains the outbox; delete the
checkpoint file to process the file again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from edge.config import NodeConfig

logger = logging.getLogger(__name__)

# Sections whose change makes earlier counts incomparable with new ones.
_ANALYTICS_SECTIONS = (
    "source",
    "model",
    "detection",
    "tracker",
    "geometry",
    "lines",
    "zones",
    "masks",
    "counts",
    "motion",
)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Progress of one file run.

    Attributes:
        key: digest of the file's identity and the analytics settings.
        resume_pts_s: stream time of the first frame not yet counted.
        completed: True once the whole file was counted and flushed.
    """

    key: str
    resume_pts_s: float
    completed: bool = False


def run_key(config: NodeConfig) -> str | None:
    """Return the identity of a file run, or None when the source is no file."""
    path = Path(config.source.uri)
    if not path.is_file():
        return None
    stat = path.stat()
    settings = config.model_dump(mode="json", include=set(_ANALYTICS_SECTIONS))
    text = json.dumps(
        {
            "file": str(path.resolve()),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "settings": settings,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


class CheckpointFile:
    """Reads and atomically rewrites one checkpoint file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, key: str) -> Checkpoint | None:
        """Return the checkpoint of the run `key`, or None to start afresh."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            logger.warning("ignoring unreadable checkpoint %s: %s", self.path, error)
            return None
        if data.get("key") != key:
            logger.info(
                "checkpoint %s belongs to another file or settings; starting afresh",
                self.path,
            )
            return None
        return Checkpoint(key, float(data["resume_pts_s"]), bool(data["completed"]))

    def save(self, checkpoint: Checkpoint) -> None:
        """Write the checkpoint with write, fsync, rename."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("w") as handle:
            json.dump(
                {
                    "key": checkpoint.key,
                    "resume_pts_s": checkpoint.resume_pts_s,
                    "completed": checkpoint.completed,
                },
                handle,
            )
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(self.path)
