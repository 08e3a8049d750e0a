"""Claims on units of work (a text stage, a job) shared by the processes of one launch."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any


class Claims:
    """Exclusive claims on units of work for one launch (files created with O_EXCL).

    Claims live under ``<run>/claims/<launch token>/``; a new launch has a new token, so the
    claims of a killed launch never block a re-run."""

    def __init__(self, output_dir: Path, token: str, enabled: bool):
        self.token = token
        self.root = output_dir / "claims" / token
        self.enabled = enabled
        if enabled:
            self.root.mkdir(parents=True, exist_ok=True)

    def take(self, unit: str) -> bool:
        if not self.enabled:
            return True
        try:
            os.close(os.open(self.root / unit, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            return False


def new_token() -> str:
    return uuid.uuid4().hex[:12]


def launch_token(state: Any) -> str:
    """A token shared by all processes of this launch (rank 0 draws it)."""
    token = [new_token()]
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(token, from_process=0)
    return token[0]
