"""White's value in the training data, which the run records as its scale (image files given to the model later
are mapped 255 -> that value): known for image folders, IDX, CIFAR and digits; for a bare array file (.npz, .csv)
stated with `white`, kept from the run being resumed, or read off the file's values only where they leave no doubt."""

from __future__ import annotations

import dataclasses

from cnnkit.data import ImageDataset
from cnnkit.train.config import Named, SettingError

SLACK = 1e-4  # relative (training and inference alike): float round-off just above white is still white
EIGHT_BIT_ABOVE = 128  # a largest value above this and at most 255 is 8-bit data (no image is that dark)
HINT = "16 for scikit-learn's digits, 255 for 8-bit images, 1 for 0..1 floats"


def with_white(dataset: ImageDataset, white: float | None, recorded: float | None = None
               ) -> tuple[ImageDataset, str | None]:
    """The dataset with white's value for training, and the log line saying which was taken (None where the source
    states its own). `white`: the config's; `recorded`: the scale of the run being resumed (runs made before `white`
    was a setting recorded a guess, which their weights were trained in). Values above white are refused."""
    if dataset.pixel_max_known:
        refuse_for_known(white, dataset.source, dataset.pixel_max)
        return dataset, None
    top = dataset.largest if dataset.largest is not None else float(dataset.images.max())
    if white is not None:
        _check_within(top, white, dataset.source, "the stated ", Named("white", _number(white)))
        taken, why = white, "stated; "
    elif recorded is not None:
        _check_within(top, recorded, dataset.source, f"white {recorded:g}, the scale the resumed run was trained in")
        taken, why = recorded, "recorded by the run; "
    else:
        taken, why = guessed_white(top, dataset.source), ""
    note = f"white = {taken:g} ({why}the data's largest value is {top:g})"
    return dataclasses.replace(dataset, pixel_max=float(taken), pixel_max_known=True), note


def guessed_white(top: float, source: str) -> float:
    """1 for data within 0..1, 255 for data whose largest value is above 128 and at most 255; anything else (digits'
    0..16, 16-bit images) could be either, or neither, and is refused rather than trained on the wrong scale."""
    if top <= 1.0 * (1 + SLACK):
        return 1.0
    if EIGHT_BIT_ABOVE < top <= 255.0 * (1 + SLACK):
        return 255.0
    raise SettingError(f"{source}: the largest value is {top:g}; say which value is white with ", _Setting(),
                       f" ({HINT})")


def refuse_for_known(white: float | None, source: str, pixel_max: float) -> None:
    """Refuse `white` for a source that states its own (image folders, streamed or not, IDX, CIFAR, digits)."""
    if white is not None:
        raise SettingError(Named("white"), f" states the scale of an array file (.npz, .csv); white in {source} is "
                           f"{pixel_max:g} already")


def _check_within(top: float, white: float, source: str, *said: str | Named) -> None:
    """Refuse data whose largest value is above white, naming the file, the value and white."""
    if top > white * (1 + SLACK):
        raise SettingError(f"{source}: values reach {top:g}, above ", *said)


class _Setting:
    """`--white` on the command line, `white=` from Python (a message part, as `Named` is)."""

    def worded(self, flags: bool) -> str:
        """The setting as the caller gives it."""
        return "--white" if flags else "white="


def _number(value: float) -> float | int:
    """16.0 said as 16."""
    return int(value) if float(value).is_integer() else value
