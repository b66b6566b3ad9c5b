"""Training progress for the user: a tqdm bar on a terminal, log lines elsewhere."""

from __future__ import annotations

import logging
import sys

from tqdm import tqdm

log = logging.getLogger("pinnkan")


class Progress:
    """A tqdm bar on a terminal, else a log line every `log_every` steps."""

    def __init__(self, total: int, mode: str, log_every: int, desc: str, initial: int = 0) -> None:
        use_bar = mode == "bar" or (mode == "auto" and sys.stderr.isatty())
        self.bar = tqdm(total=total, desc=desc, leave=True, initial=initial) if use_bar else None
        self.log_lines = mode in ("log", "auto") and not use_bar
        self.total, self.log_every, self.desc = total, log_every, desc

    def update(self, step: int, loss: float, rel_l2: float) -> None:
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{loss:.3e}", rel_l2=f"{rel_l2:.3e}", refresh=False)
        elif self.log_lines and (step % self.log_every == 0 or step == self.total):
            log.info(
                "%s step %d/%d  loss %.3e  rel_l2 %.3e", self.desc, step, self.total, loss, rel_l2
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
