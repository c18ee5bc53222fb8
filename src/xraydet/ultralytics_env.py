"""Running Ultralytics offline and quietly: no downloads, no update checks, none of its own loggers.

Anything in xraydet that trains with Ultralytics (the training engine, the doctor's overfit probe) does so
inside :func:`offline_guard`. Ultralytics sends a request for ``Arial.ttf`` at every training, its AMP
self-test on a GPU downloads ``yolo26n.pt``, and its MLflow/TensorBoard callbacks would log a second copy of
each run.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger(__name__)

INTEGRATIONS = ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb", "sync")


def pil_open(fp: str | Path | IO[bytes], formats: tuple[str, ...] | None = None) -> Image:
    """PIL's own ``Image.open``, whether or not Ultralytics has been imported.

    Ultralytics replaces ``Image.open`` with a wrapper that, for a file PIL cannot identify, tries to
    pip-install a HEIF plugin and retry: offline that fails with ``ModuleNotFoundError: pi_heif`` instead of
    PIL's clear ``UnidentifiedImageError``, and an untrusted upload should never trigger an install.

    Example:
        >>> import io
        >>> pil_open(io.BytesIO(b"not an image"))
        Traceback (most recent call last):
        ...
        PIL.UnidentifiedImageError: cannot identify image file <_io.BytesIO object at 0x...>
    """
    from PIL import Image as PILImage

    opener = PILImage.open
    if opener.__module__ != PILImage.__name__:
        opener = getattr(sys.modules.get(opener.__module__), "_image_open", opener)
    return opener(fp, formats=formats)


def _local_font(font: str = "Arial.ttf") -> Path:
    """Ultralytics' font, if it was ever cached, else matplotlib's bundled DejaVu Sans: never a download."""
    from matplotlib import font_manager
    from ultralytics.utils import USER_CONFIG_DIR

    cached = USER_CONFIG_DIR / Path(font).name
    if cached.exists():
        return cached
    return Path(font_manager.findfont("DejaVu Sans", fallback_to_default=True))


def _amp_check_offline(original: Callable[..., bool]) -> Callable[..., bool]:
    def check(model: Any, *args: Any, **kwargs: Any) -> bool:
        from ultralytics.utils import WEIGHTS_DIR

        on_accelerator = next(model.parameters()).device.type not in {"cpu", "mps"}
        if not on_accelerator or (WEIGHTS_DIR / "yolo26n.pt").is_file():
            return original(
                model, *args, **kwargs
            )  # Ultralytics returns False on CPU without loading anything
        log.info(
            "AMP check skipped (it would download yolo26n.pt); keeping amp=True as Ultralytics does offline"
        )
        return True

    return check


@contextmanager
def offline_guard() -> Iterator[None]:
    """While training: Ultralytics' own loggers/analytics off, no font, AMP-check weight or update download.

    Settings are changed in memory only (the user's settings file is left alone) and restored afterwards.
    """
    import ultralytics.data.utils as data_utils
    import ultralytics.engine.trainer as trainer_mod
    import ultralytics.utils.checks as checks
    import ultralytics.utils.plotting as plotting
    from ultralytics.utils import SETTINGS

    saved = {k: SETTINGS[k] for k in INTEGRATIONS if k in SETTINGS}
    with ExitStack() as stack:
        dict.update(SETTINGS, dict.fromkeys(saved, False))
        stack.callback(dict.update, SETTINGS, saved)
        patches = [
            (data_utils, "check_font", _local_font),
            (plotting, "check_font", _local_font),
            (checks, "check_pip_update_available", lambda: False),
            (trainer_mod, "check_amp", _amp_check_offline(trainer_mod.check_amp)),
        ]
        for module, name, replacement in patches:
            stack.callback(setattr, module, name, getattr(module, name))
            setattr(module, name, replacement)
        yield
