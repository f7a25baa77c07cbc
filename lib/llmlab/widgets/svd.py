"""Notebook 06: slide k and watch an image rebuild itself from its top-k singular values."""

from __future__ import annotations

import ipywidgets as W
import numpy as np

from .._checks import check_choice, check_int
from ..display import encode_image
from ..svd import SVDFactors, compression_ratio, demo_images, energy, factorize, reconstruct, relative_error
from ..timing import Stopwatch
from .base import LabWidget

__all__ = ["SVDExplorer", "svd_explorer"]


class SVDExplorer(LabWidget):
    """Slide k and watch an image rebuild itself from its top-k singular values (topic 6).

    Controls: ``.k`` (IntSlider, 1..min(H, W)) and ``.image`` (Dropdown). Readout: ``.readout``
    (HTML, text ``"k = 12 · relative error = 0.1234 · energy kept = 0.9848 · compression
    ratio = 0.0469"``; the numbers in ``.last``). Pictures: ``.original`` and ``.reconstruction``
    (``ipywidgets.Image``; no ``.plot``: nothing is drawn with matplotlib). The SVD of each image
    is computed once and cached; a slider step only runs :func:`llmlab.svd.reconstruct` and
    encodes one uncompressed bitmap (:func:`llmlab.display.encode_image`), so it stays live on a
    laptop CPU. :meth:`time_steps` measures that step for the bench.
    """

    css_prefix, css_box = "llmlab-svd", "llmlab-svd-explorer"
    READOUT = ("k = {k} · relative error = {relative_error:.4f} · energy kept = {energy:.4f} · "
               "compression ratio = {compression_ratio:.4f}")

    def __init__(self, images=None, *, image=None, k=20, device=None, size=512, image_format="bmp",
                 display_width=360):
        super().__init__()
        self.images = dict(demo_images(size) if images is None else images)
        if not self.images:
            raise ValueError("images must hold at least one image")
        name = next(iter(self.images)) if image is None else image
        check_choice("image", name, list(self.images))
        k = check_int("k", k, low=1)  # above the image's rank: the slider's maximum
        self.image_format = check_choice("image_format", image_format, ("bmp", "png"))
        display_width = check_int("display_width", display_width, low=1)
        self.device = device
        self._factors: dict[str, SVDFactors] = {}  # image name -> its SVD, computed on first use
        self._original_bytes: dict[str, tuple[bytes, str]] = {}
        self._original_shown: str | None = None

        f = self.factors_of(name)
        self.image = W.Dropdown(options=list(self.images), value=name, description="image")
        self.k = W.IntSlider(value=min(k, f.max_rank), min=1, max=f.max_rank, description="k",
                             continuous_update=True, layout=W.Layout(width="420px"))
        self.original = W.Image(format=image_format, width=display_width)
        self.reconstruction = W.Image(format=image_format, width=display_width)
        self.original_label = W.Label("original")
        self.reconstruction_label = W.Label()
        self._assemble(W.VBox([
            W.HBox([self.image, self.k]),
            self.readout,
            W.HBox([W.VBox([self.original_label, self.original]),
                    W.VBox([self.reconstruction_label, self.reconstruction])]),
        ]), image=self.image, k=self.k, original=self.original, reconstruction=self.reconstruction)
        self._watch(self.k)
        self.image.observe(self._on_image, names="value")
        self.refresh()

    # -- the cached heavy part -----------------------------------------------------------------
    def factors_of(self, name: str) -> SVDFactors:
        """The SVD of image ``name``, computed once."""
        if name not in self._factors:
            self._factors[name] = factorize(self.images[name], device=self.device)
        return self._factors[name]

    @property
    def factors(self) -> SVDFactors:
        """The SVD of the image shown now."""
        return self.factors_of(self.image.value)

    # -- the cheap per-step part ---------------------------------------------------------------
    def numbers(self, k: int) -> dict:
        """What the readout shows for rank ``k`` of the current image, as numbers."""
        f = self.factors
        return {"image": self.image.value, "k": k, "relative_error": relative_error(f, k), "energy": energy(f, k),
                "compression_ratio": compression_ratio(f.height, f.width, k)}

    def readout_for(self, k: int) -> str:
        """The readout text for rank ``k`` of the current image."""
        return self.READOUT.format(**self.numbers(k))

    def _show_original(self) -> None:
        """Show the current image on the left (encoded once per image, shown again only on a switch)."""
        name = self.image.value
        if name == self._original_shown:
            return
        f = self.factors
        if name not in self._original_bytes:
            self._original_bytes[name] = encode_image(reconstruct(f, f.max_rank), fmt=self.image_format)
        data, fmt = self._original_bytes[name]
        self.original.format, self.original.value = fmt, data
        self.original_label.value = f"original: {name}, {'×'.join(str(d) for d in f.shape)}"
        self._original_shown = name

    def refresh(self) -> None:
        """Reconstruct at the slider's k, show it, update the readout (one slider step)."""
        f, k = self.factors, self.k.value
        self._show_original()
        data, fmt = encode_image(reconstruct(f, k), fmt=self.image_format)
        self.reconstruction.format, self.reconstruction.value = fmt, data
        self.reconstruction_label.value = f"rank {k} of {f.max_rank}"
        self.last = self.numbers(k)
        self.readout.value = self.READOUT.format(**self.last)

    def _on_image(self, change) -> None:
        """A new image: fit the slider to its rank (one refresh, not one per slider change)."""
        max_rank = self.factors.max_rank  # factorizes a new image once
        with self._refresh_paused(), self.k.hold_trait_notifications():
            self.k.max = max_rank
            self.k.value = min(self.k.value, max_rank)
        self.refresh()

    def time_steps(self, ks=None) -> list[float]:
        """Wall time (s) of each slider step, moving ``.k`` through ``ks`` as a person would.

        Default ``ks``: 25 values spread over 1..min(H, W). Each step is timed by
        :class:`llmlab.timing.Stopwatch`, which synchronises the SVD's device (CUDA).
        """
        f = self.factors
        if ks is None:
            ks = np.unique(np.linspace(1, f.max_rank, 25).round().astype(int)).tolist()
        times = []
        for k in ks:
            k = check_int("k", k, low=1, high=f.max_rank)
            if k == self.k.value:  # no change, no callback: step away first
                self.k.value = k - 1 if k > 1 else k + 1
            with Stopwatch(f.device) as watch:
                self.k.value = k
            times.append(watch.seconds)
        return times


def svd_explorer(images=None, *, image=None, k=20, device=None, size=512, **kwargs) -> SVDExplorer:
    """Build the topic-6 widget: a k slider and an image chooser over cached SVDs.

    ``images``: dict name -> (H, W) or (H, W, C) array (default: :func:`llmlab.svd.demo_images`
    at height ``size``: camera, astronaut, coffee, checkerboard, rotated checkerboard, noise).
    Display ``.widget``; drive ``.k.value`` / ``.image.value`` from code and read ``.readout``.
    Keywords: ``image_format`` ("bmp" or "png"), ``display_width`` (pixels).
    """
    return SVDExplorer(images, image=image, k=k, device=device, size=size, **kwargs)
