"""Progress output: a bar on a terminal, plain lines in logs and CI; only the main process speaks."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from cnnkit.train.config import Named, SettingError, TrainConfig


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


class EpochLog:
    """One line per evaluated epoch, and on a terminal a progress bar of the epochs below those lines.

    What is said while the run is prepared (its data, model, folder, resumed state) is held until the epochs
    `start`: a run refused on the way prints its one-line error and nothing else.
    """

    def __init__(self, config: TrainConfig, enabled: bool, progress: bool | None, stream: TextIO | None = None) -> None:
        self.config, self.enabled, self.stream = config, enabled, stream or sys.stdout
        self.tty = sys.stderr.isatty() if progress is None else progress
        self.writer = None
        self.bar = None
        self.said: set[str] = set()
        self._lock = threading.Lock()  # seeds trained side by side report from several threads
        self._held: list[str] | None = []  # notes of the preparation, until `start`; None once started

    def start(self, start_epoch: int, tensorboard_dir: Path | None = None) -> None:
        """Say the preparation's notes, then open the progress bar (on a terminal) and the TensorBoard writer (if
        asked) as the epochs begin."""
        if not self.enabled:
            return
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise SettingError(Named("tensorboard", True), " needs the tensorboard package: pip install "
                                   "'cnnkit[tensorboard]'") from None
            self.writer = SummaryWriter(str(tensorboard_dir))
        held, self._held = self._held or [], None
        for text in held:
            print(text, file=self.stream, flush=True)
        if self.tty:
            self.bar = tqdm(total=self.config.epochs, initial=start_epoch - 1, desc=f"training {self.config.model}",
                            unit="epoch", leave=False)

    def epoch(self, record: dict) -> None:
        """Report one finished epoch."""
        if not self.enabled:
            return
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("epoch", "step") and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, record["epoch"])
        if self.bar is not None:
            self.bar.update(1)
        if "val_accuracy" in record or "article_train_accuracy" in record:
            self.note(self._line(record))  # above the bar on a terminal: the history stays on screen

    def _line(self, record: dict) -> str:
        """One evaluated epoch as a line of the log."""
        parts = [f"epoch {record['epoch']:>4}/{self.config.epochs}",
                 f"train objective {record['train_loss']:.4f} acc {_pct(record['train_accuracy'])}"]
        if record.get("val_accuracy") is not None:
            parts.append(f"val cross-entropy {record['val_loss']:.4f} acc {_pct(record['val_accuracy'])}")
        if "article_train_accuracy" in record:
            parts.append(f"article-style accuracy {_pct(record['article_train_accuracy'])}")
        parts.append(f"lr {record['lr']:.2e}  {record['seconds']:.2f}s")
        return "  ".join(parts)

    def note(self, text: str) -> None:
        """A one-off message (held while the run is prepared)."""
        if self.enabled:
            if self._held is not None:
                self._held.append(text)
            elif self.bar is not None:
                self.bar.write(text, file=self.stream)
            else:
                print(text, file=self.stream, flush=True)

    def note_once(self, key: str, text: str) -> None:
        """A message said at most once per run."""
        with self._lock:
            if key in self.said:
                return
            self.said.add(key)
        self.note(text)

    def close(self) -> None:
        """Remove the bar; notes still held (a run stopped before its epochs began) are dropped."""
        self._held = None
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def final(self, final: dict, best: dict | None) -> None:
        """The closing lines: held-out test accuracy (and the article-style figure for the seed recipe)."""
        if not self.enabled:
            return
        if best is not None:
            print(f"best validation accuracy {_pct(best['val_accuracy'])} at epoch {best['epoch']}", file=self.stream)
        if final.get("test_count"):
            whose = "the best validation epoch's" if best is not None and best["epoch"] == final["epoch"] else \
                "the last epoch's"
            print(f"test accuracy of epoch {final['epoch']} ({whose} weights): {_pct(final['test_accuracy'])} on "
                  f"{final['test_count']} held-out images (cross-entropy {final['test_loss']:.4f})", file=self.stream)
        if "article_test_accuracy" in final:
            print(f"test accuracy with batch statistics (the article's way): {_pct(final['article_test_accuracy'])}",
                  file=self.stream)
