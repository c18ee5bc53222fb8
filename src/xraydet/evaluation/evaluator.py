"""The evaluator protocol: feed every image once, read ``{task: {metric: value}}`` at the end.

Borrowed from detectron2's ``DatasetEvaluator``: an evaluator is reset, sees each :class:`Sample` in turn and
then summarises. :class:`EvaluatorGroup` runs several in one pass and refuses two evaluators that would write
the same task key, so one result can never silently overwrite another.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xraydet.structures import Detections

DATASET = "dataset"
NEGATIVES = "negatives"


@dataclass(frozen=True)
class Sample:
    """One evaluated image (a "bag"): its ground truth and *all* predictions kept at the low evaluation conf.

    Attributes:
        image: the image file.
        width, height: its size in pixels.
        gt: labelled boxes (empty for a threat-free negative or a background image).
        pred: predictions at the evaluation confidence (0.001), up to 300 boxes, data set class ids.
        source: ``"dataset"`` for images of the evaluated split, ``"negatives"`` for threat-free folders.
    """

    image: Path
    width: int
    height: int
    gt: Detections
    pred: Detections
    source: str = DATASET

    @property
    def is_negative(self) -> bool:
        return self.source == NEGATIVES


class DatasetEvaluator(ABC):
    """Base class: ``reset()`` before a pass, ``process(sample)`` per image, ``evaluate()`` at the end."""

    def reset(self) -> None:  # noqa: B027 - optional hook, no-op by default
        """Forget everything seen so far."""

    @abstractmethod
    def process(self, sample: Sample) -> None:
        """Take one image into account."""

    @abstractmethod
    def evaluate(self) -> dict[str, dict[str, Any]]:
        """Summarise everything processed as ``{task: {metric: value}}``."""


class EvaluatorGroup(DatasetEvaluator):
    """Runs several evaluators over the same samples and merges their results.

    Example:
        >>> group = EvaluatorGroup([BoxEvaluator(names), ScreeningEvaluator(threat_ids)])  # doctest: +SKIP
        >>> for s in samples: group.process(s)  # doctest: +SKIP
        >>> sorted(group.evaluate())  # doctest: +SKIP
        ['box', 'screening']
    """

    def __init__(self, evaluators: Iterable[DatasetEvaluator]) -> None:
        self.evaluators = list(evaluators)

    def reset(self) -> None:
        for evaluator in self.evaluators:
            evaluator.reset()

    def process(self, sample: Sample) -> None:
        for evaluator in self.evaluators:
            evaluator.process(sample)

    def evaluate(self) -> dict[str, dict[str, Any]]:
        results: dict[str, dict[str, Any]] = {}
        for evaluator in self.evaluators:
            for task, metrics in evaluator.evaluate().items():
                if task in results:
                    raise ValueError(
                        f"two evaluators report task {task!r} (the second is {type(evaluator).__name__}); "
                        "give each evaluator its own task key"
                    )
                results[task] = metrics
        return results
