"""Thin ipywidgets front ends over the llmlab functions, one per notebook.

Each builder returns an object whose ``.widget`` is displayed by the notebook and whose
controls (``.k``, ``.steps`` ...) and readouts can be driven from code, so CI exercises the
same callbacks a person triggers by moving a slider. Heavy work (an SVD, a model forward) is
done once when the widget is built; a callback only does the cheap per-step part.
"""

from __future__ import annotations

import ipywidgets as W

# === section: svd ===
class SVDExplorer:
    """Slide k and watch an image rebuild itself from its top-k singular values (topic 6).

    Controls: ``.k`` (IntSlider, 1..min(H, W)) and ``.image`` (Dropdown). Readout: ``.readout``
    (HTML, text ``"k = 12 · relative error = 0.1234 · energy kept = 0.9848 · compression
    ratio = 0.0469"``). Pictures: ``.original`` and ``.reconstruction`` (ipywidgets.Image).
    Display ``.widget``. The SVD of each image is computed once and cached; a slider step only
    runs :func:`llmlab.svd.reconstruct` and encodes one uncompressed bitmap (no matplotlib), so
    it stays live on a laptop CPU. :meth:`time_steps` measures that step for the bench.
    """

    READOUT = "k = {k} · relative error = {error:.4f} · energy kept = {energy:.4f} · compression ratio = {ratio:.4f}"

    def __init__(self, images=None, *, image=None, k=20, device=None, size=512, image_format="bmp", display_width=360):
        from llmlab import svd

        self._svd = svd
        self.images = dict(svd.demo_images(size) if images is None else images)
        if not self.images:
            raise ValueError("images must hold at least one image")
        name = next(iter(self.images)) if image is None else image
        if name not in self.images:
            raise ValueError(f"image must be one of {list(self.images)}, got {name!r}")
        if image_format not in ("bmp", "png"):
            raise ValueError(f"image_format must be 'bmp' or 'png', got {image_format!r}")
        self.device = device
        self.image_format = image_format
        self._factors = {}  # image name -> SVDFactors, computed on first use
        self._original_bytes = {}
        self._busy = False  # True while switching image: slider changes then don't redraw

        f = self.factors_of(name)
        self.image = W.Dropdown(options=list(self.images), value=name, description="image")
        self.k = W.IntSlider(value=min(max(int(k), 1), f.max_rank), min=1, max=f.max_rank, description="k",
                             continuous_update=True, layout=W.Layout(width="420px"))
        self.readout = W.HTML()
        self.original = W.Image(format=image_format, width=display_width)
        self.reconstruction = W.Image(format=image_format, width=display_width)
        self.original_label = W.Label("original")
        self.reconstruction_label = W.Label()
        for widget, css in ((self.image, "image"), (self.k, "k"), (self.readout, "readout"),
                            (self.original, "original"), (self.reconstruction, "reconstruction")):
            widget.add_class(f"llmlab-svd-{css}")
        self.widget = W.VBox([
            W.HBox([self.image, self.k]),
            self.readout,
            W.HBox([W.VBox([self.original_label, self.original]),
                    W.VBox([self.reconstruction_label, self.reconstruction])]),
        ])
        self.widget.add_class("llmlab-svd-explorer")
        self.k.observe(self._on_k, names="value")
        self.image.observe(self._on_image, names="value")
        self._show_original()
        self.redraw()

    # -- the cached heavy part -----------------------------------------------------------------
    def factors_of(self, name: str):
        """The SVD of image ``name``, computed once."""
        if name not in self._factors:
            self._factors[name] = self._svd.factorize(self.images[name], device=self.device)
        return self._factors[name]

    @property
    def factors(self):
        """The SVD of the image shown now."""
        return self.factors_of(self.image.value)

    # -- the cheap per-step part ---------------------------------------------------------------
    def _encode(self, W_k) -> bytes:
        """Float (H, W) or (H, W, C) tensor -> clipped uint8 -> BMP/PNG bytes."""
        import io

        import torch
        from PIL import Image

        # Work on contiguous memory: a colour W_k is a (H, W, C) view of a (C, H, W) tensor, and
        # elementwise ops on that strided view cost ten times more than on the (C, H, W) layout.
        channels_last = W_k.ndim == 3
        x = W_k.permute(2, 0, 1) if channels_last else W_k
        x = x.contiguous().clamp_(0.0, 1.0).mul_(255.0).add_(0.5).to(torch.uint8)
        if channels_last:
            x = x.permute(1, 2, 0).contiguous()  # uint8 copy: cheap
        pixels = x.cpu().numpy()
        if pixels.ndim == 3 and pixels.shape[2] in (1, 2):
            pixels = pixels[:, :, 0]  # grey (+ alpha): show the grey
        fmt = self.image_format
        if pixels.ndim == 3 and pixels.shape[2] == 4:
            fmt = "png"  # BMP has no portable alpha
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=fmt.upper(), **({"compress_level": 1} if fmt == "png" else {}))
        return buffer.getvalue()

    def _show_original(self) -> None:
        name = self.image.value
        if name not in self._original_bytes:
            f = self.factors
            self._original_bytes[name] = self._encode(self._svd.reconstruct(f, f.max_rank))
        self.original.format = "png" if self._original_bytes[name][:4] == b"\x89PNG" else self.image_format
        self.original.value = self._original_bytes[name]
        f = self.factors
        layout = "×".join(str(d) for d in f.shape)
        self.original_label.value = f"original: {name}, {layout}"

    def readout_for(self, k: int) -> str:
        """The readout text for rank ``k`` of the current image."""
        f = self.factors
        return self.READOUT.format(k=k, error=self._svd.relative_error(f, k), energy=self._svd.energy(f, k),
                                   ratio=self._svd.compression_ratio(f.height, f.width, k))

    def redraw(self) -> None:
        """Reconstruct at the slider's k, show it, update the readout (one slider step)."""
        f, k = self.factors, self.k.value
        data = self._encode(self._svd.reconstruct(f, k))
        self.reconstruction.format = "png" if data[:4] == b"\x89PNG" else self.image_format
        self.reconstruction.value = data
        self.reconstruction_label.value = f"rank {k} of {f.max_rank}"
        self.readout.value = self.readout_for(k)

    @property
    def readout_text(self) -> str:
        return self.readout.value

    def _on_k(self, change) -> None:
        if not self._busy:
            self.redraw()

    def _on_image(self, change) -> None:
        f = self.factors  # factorizes a new image once
        self._busy = True
        try:
            k = min(self.k.value, f.max_rank)
            if f.max_rank >= self.k.max:
                self.k.max = f.max_rank
                self.k.value = k
            else:
                self.k.value = k
                self.k.max = f.max_rank
        finally:
            self._busy = False
        self._show_original()
        self.redraw()

    def time_steps(self, ks=None) -> list[float]:
        """Wall time (s) of each slider step, moving ``.k`` through ``ks`` as a person would.

        Default ``ks``: 25 values spread over 1..min(H, W). Synchronises CUDA after each step.
        """
        import time

        import numpy as np
        import torch

        f = self.factors
        if ks is None:
            ks = np.unique(np.linspace(1, f.max_rank, 25).round().astype(int)).tolist()
        sync = torch.cuda.synchronize if f.device.type == "cuda" else (lambda: None)
        times = []
        for k in ks:
            if k == self.k.value:  # no change, no callback: step away first
                self.k.value = k - 1 if k > 1 else k + 1
            t0 = time.perf_counter()
            self.k.value = int(k)
            sync()
            times.append(time.perf_counter() - t0)
        return times


def svd_explorer(images=None, *, image=None, k=20, device=None, size=512, **kwargs) -> SVDExplorer:
    """Build the topic-6 widget: a k slider and an image chooser over cached SVDs.

    ``images``: dict name -> (H, W) or (H, W, C) array (default: :func:`llmlab.svd.demo_images`
    at height ``size``: camera, astronaut, coffee, checkerboard, rotated checkerboard, noise).
    Display ``.widget``; drive ``.k.value`` / ``.image.value`` from code and read ``.readout``.
    """
    return SVDExplorer(images, image=image, k=k, device=device, size=size, **kwargs)
# === end: svd ===

# === section: decoding ===
class DecodingWidget:
    """Temperature / top-k / top-p sliders over one next-token distribution (notebook 02).

    ``logits`` (vocab,) are computed once when the widget is built; a slider move only re-runs
    :func:`llmlab.decoding.warp_logits` and redraws the table. ``.kept`` holds the current
    candidate set as ``[(token_text, probability), ...]`` (most likely first) and ``.readout``
    (an HTML widget) shows it with bars.
    """

    def __init__(self, logits, decode_token, *, prompt: str = "", n_show: int = 15):
        import torch

        self.logits = logits.detach().float().cpu()
        self.decode_token = decode_token
        self.prompt = prompt
        self.n_show = n_show
        style = {"description_width": "90px"}
        self.temperature = W.FloatSlider(value=1.0, min=0.1, max=3.0, step=0.05, description="temperature", style=style)
        self.top_k = W.IntSlider(value=0, min=0, max=200, step=1, description="top-k (0=off)", style=style)
        self.top_p = W.FloatSlider(value=1.0, min=0.05, max=1.0, step=0.01, description="top-p", style=style)
        self.summary = W.HTML()
        self.readout = W.HTML()
        for control in (self.temperature, self.top_k, self.top_p):
            control.observe(self._update, names="value")
        self.widget = W.VBox([W.HTML(f"<b>Next token after:</b> <code>{_decoding_escape(prompt)}</code>"),
                              self.temperature, self.top_k, self.top_p, self.summary, self.readout])
        self.kept: list[tuple[str, float]] = []
        self._torch = torch
        self._update()

    def _update(self, change=None) -> None:
        from llmlab.decoding import warp_logits

        torch = self._torch
        scores = warp_logits(self.logits, temperature=float(self.temperature.value), top_k=int(self.top_k.value),
                             top_p=float(self.top_p.value))
        probs = torch.softmax(scores, dim=-1)
        kept_ids = torch.nonzero(torch.isfinite(scores)).flatten()
        order = kept_ids[torch.argsort(probs[kept_ids], descending=True)]
        self.kept = [(self.decode_token(int(i)), float(probs[i])) for i in order]
        entropy = float(-(probs[order] * probs[order].log()).sum())
        self.summary.value = (f"kept <b>{len(order)}</b> of {self.logits.numel()} tokens; "
                              f"entropy {entropy:.2f} nats; top token p = {self.kept[0][1]:.3f}")
        rows = "".join(
            f"<tr><td><code>{_decoding_escape(repr(text))}</code></td><td style='text-align:right'>{p:.3f}</td>"
            f"<td><div style='background:#0072B2;height:10px;width:{max(1, int(300 * p))}px'></div></td></tr>"
            for text, p in self.kept[: self.n_show]
        )
        more = f"<tr><td colspan=3>... and {len(self.kept) - self.n_show} more</td></tr>" if len(self.kept) > self.n_show else ""
        self.readout.value = f"<table>{rows}{more}</table>"


def _decoding_escape(text: str) -> str:
    import html

    return html.escape(text)


def decoding_widget(model, tokenizer, prompt: str, *, n_show: int = 15) -> DecodingWidget:
    """Build the decoding widget for ``prompt``: one forward pass now, only filtering on slider moves."""
    from llmlab.decoding import next_token_logits

    input_ids = tokenizer(prompt, return_tensors="pt").input_ids
    logits = next_token_logits(model, input_ids)
    return DecodingWidget(logits, lambda i: tokenizer.decode([i]), prompt=prompt, n_show=n_show)
# === end: decoding ===

# === section: schedules ===
class CosineExplorer:
    """Slide t_max, eta_min and the warm-up and watch the LR curve, PyTorch's values on top (topic 3).

    Controls: ``.t_max`` (IntSlider), ``.eta_min`` (FloatSlider, 0..``base_lr``) and
    ``.warmup`` (IntSlider, warm-up steps; clipped to t_max). Left panel: :func:`cosine_annealing`
    (line) and ``torch.optim.lr_scheduler.CosineAnnealingLR`` (dots) over 3·t_max steps, past
    t_max where it climbs back up. Right panel: :func:`warmup_cosine` with ``total_steps = t_max``
    (line) and Hugging Face's ``get_cosine_with_min_lr_schedule_with_warmup`` (dots) over
    0..t_max. Readout ``.readout`` (HTML): the settings, the max |ours − PyTorch| of each panel and
    the LR at 2·t_max; the same numbers are in ``.max_diff_cosine``, ``.max_diff_warmup``,
    ``.lr_at_2t_max``. The picture (``.plot``, a PNG in ipywidgets.Image) is drawn with
    matplotlib's Agg canvas, not pyplot, so it works under any backend and leaks no figures.
    """

    READOUT = ("t_max = {t_max} · eta_min = {eta_min:.2f} · warm-up = {warmup}{clip}<br>"
               "CosineAnnealingLR: max |closed form − PyTorch| = {d_cos:.1e} over {n_cos} steps; "
               "LR at 2·t_max = {lr_2t:.4f} (back at base_lr = {base_lr:g})<br>"
               "warm-up + cosine: max |ours − Hugging Face| = {d_warm:.1e} over {n_warm} steps")

    def __init__(self, *, base_lr=1.0, t_max=50, eta_min=0.1, warmup=10, max_t_max=200, width=820):
        from llmlab._checks import check_float

        self.base_lr = check_float("base_lr", base_lr, low=0.0)
        if self.base_lr <= 0:
            raise ValueError(f"base_lr must be > 0 for the widget, got {base_lr}")
        self.t_max = W.IntSlider(value=t_max, min=2, max=max_t_max, step=1, description="t_max",
                                 continuous_update=False, layout=W.Layout(width="300px"))
        self.eta_min = W.FloatSlider(value=eta_min, min=0.0, max=self.base_lr, step=0.05 * self.base_lr,
                                     description="eta_min", continuous_update=False, layout=W.Layout(width="300px"))
        self.warmup = W.IntSlider(value=warmup, min=0, max=max_t_max, step=1, description="warm-up",
                                  continuous_update=False, layout=W.Layout(width="300px"))
        self.readout = W.HTML()
        self.plot = W.Image(format="png", width=width)
        for widget, css in ((self.t_max, "t-max"), (self.eta_min, "eta-min"), (self.warmup, "warmup"),
                            (self.readout, "readout"), (self.plot, "plot")):
            widget.add_class(f"llmlab-schedules-{css}")
        self.widget = W.VBox([W.HBox([self.t_max, self.eta_min, self.warmup]), self.readout, self.plot])
        self.widget.add_class("llmlab-cosine-explorer")
        for control in (self.t_max, self.eta_min, self.warmup):
            control.observe(lambda change: self.redraw(), names="value")
        self.redraw()

    def curves(self):
        """(steps, ours, PyTorch) for both panels at the current slider values, as two tuples."""
        from torch.optim.lr_scheduler import CosineAnnealingLR
        from transformers import get_cosine_with_min_lr_schedule_with_warmup

        from llmlab.schedules import cosine_annealing, torch_trace, warmup_cosine

        t_max, eta_min, base_lr = self.t_max.value, min(self.eta_min.value, self.base_lr), self.base_lr
        warmup = min(self.warmup.value, t_max)
        n_cos = 3 * t_max + 1
        ours_cos = [cosine_annealing(t, base_lr=base_lr, t_max=t_max, eta_min=eta_min) for t in range(n_cos)]
        torch_cos = torch_trace(lambda o: CosineAnnealingLR(o, T_max=t_max, eta_min=eta_min), n_cos, base_lr=base_lr)
        n_warm = t_max + 1
        ours_warm = [warmup_cosine(t, base_lr=base_lr, warmup_steps=warmup, total_steps=t_max, min_lr=eta_min)
                     for t in range(n_warm)]
        hf_warm = torch_trace(lambda o: get_cosine_with_min_lr_schedule_with_warmup(o, warmup, t_max, min_lr=eta_min),
                              n_warm, base_lr=base_lr)
        if warmup == t_max:  # HF's zero-length decay sits at base_lr on the last step; ours at min_lr
            hf_warm[-1] = ours_warm[-1]
        return (list(range(n_cos)), ours_cos, torch_cos), (list(range(n_warm)), ours_warm, hf_warm)

    def _draw(self, cos, warm) -> bytes:
        import io

        import matplotlib as mpl
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        from llmlab.plotting import PALETTE, STYLE

        with mpl.rc_context(STYLE):
            fig = Figure(figsize=(9.0, 3.3), dpi=90, constrained_layout=True)
            FigureCanvasAgg(fig)
            ax1, ax2 = fig.subplots(1, 2)
            for ax, (steps, ours, ref), name, ref_name in (
                    (ax1, cos, "cosine_annealing", "CosineAnnealingLR"),
                    (ax2, warm, "warmup_cosine", "Hugging Face")):
                every = max(1, len(steps) // 40)
                ax.plot(steps, ours, color=PALETTE[0], label=f"llmlab {name}")
                ax.plot(steps[::every], ref[::every], "o", ms=3.5, color=PALETTE[1], label=ref_name)
                ax.set_xlabel("step")
                ax.set_ylim(-0.05 * self.base_lr, 1.08 * self.base_lr)
                ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8)
            ax1.set_ylabel("learning rate")
            ax1.axvline(self.t_max.value, color="0.5", lw=1, ls="--")
            ax1.set_title("no restart: past t_max (dashed) it climbs back")
            ax2.set_title("linear warm-up, cosine to the floor")
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png")
        return buffer.getvalue()

    def redraw(self) -> None:
        """Recompute both schedules and PyTorch's, update readout and picture (one slider step)."""
        cos, warm = self.curves()
        self.max_diff_cosine = max(abs(a - b) for a, b in zip(cos[1], cos[2]))
        self.max_diff_warmup = max(abs(a - b) for a, b in zip(warm[1], warm[2]))
        self.lr_at_2t_max = cos[2][2 * self.t_max.value]
        self.readout.value = self.READOUT.format(
            t_max=self.t_max.value, eta_min=self.eta_min.value, warmup=min(self.warmup.value, self.t_max.value),
            clip=" (clipped to t_max)" if self.warmup.value > self.t_max.value else "",
            d_cos=self.max_diff_cosine, n_cos=len(cos[0]), lr_2t=self.lr_at_2t_max, base_lr=self.base_lr,
            d_warm=self.max_diff_warmup, n_warm=len(warm[0]))
        self.plot.value = self._draw(cos, warm)

    @property
    def readout_text(self) -> str:
        return self.readout.value


def cosine_explorer(**kwargs) -> CosineExplorer:
    """Build the notebook-03 widget; see :class:`CosineExplorer` for the arguments."""
    return CosineExplorer(**kwargs)
# === end: schedules ===

# === section: accumulation ===
class AccumulationExplorer:
    """Accumulation steps K, the model and "divide loss by K": the gradient and BN-statistics gap, live.

    ``.steps`` (SelectionSlider over the divisors of the batch), ``.model_kind`` (Dropdown:
    linear + MSE, CNN + BatchNorm, CNN + GroupNorm) and ``.scale_loss`` (Checkbox) are the
    controls; ``.readout`` (HTML) shows ‖g_acc − g_big‖ / ‖g_big‖ and, for BatchNorm, how far the
    running statistics moved; ``.plot`` (Output) draws the gap against every K and the first BN
    layer's running means; ``.last`` holds the numbers shown. Every pass runs on a copy of a
    model built once, so the widget's models never change.
    """

    _LABELS = {"linear": "linear + MSE", "cnn_bn": "CNN + BatchNorm", "cnn_gn": "CNN + GroupNorm"}

    def __init__(self, *, batch_size: int = 32, steps: int = 4, kind: str = "cnn_bn", scale_loss: bool = True,
                 seed: int = 0):
        from llmlab.accumulation import KINDS, divisors, loss_fn_for, make_batch, make_model

        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        options = divisors(batch_size)
        if steps not in options:
            raise ValueError(f"steps must divide batch_size={batch_size}: one of {options}, got {steps}")
        self._problems = {k: (make_model(k, seed), loss_fn_for(k), *make_batch(k, batch_size, seed)) for k in KINDS}
        self._cache: dict = {}
        self.batch_size = batch_size
        self.steps = W.SelectionSlider(options=options, value=steps, description="steps K",
                                       continuous_update=False)
        self.model_kind = W.Dropdown(options=[(self._LABELS[k], k) for k in KINDS], value=kind, description="model")
        self.scale_loss = W.Checkbox(value=scale_loss, description="divide loss by steps")
        self.readout = W.HTML()
        self.plot = W.Output()
        self.last: dict = {}
        for control in (self.steps, self.model_kind, self.scale_loss):
            control.observe(lambda _: self.update(), names="value")
        self.widget = W.VBox([W.HBox([self.model_kind, self.steps, self.scale_loss]), self.readout, self.plot])
        self.update()

    def _pass(self, kind: str, steps: int, scale_loss: bool):
        from llmlab.accumulation import accumulation_pass

        key = (kind, steps, scale_loss)
        if key not in self._cache:
            model, loss_fn, x, y = self._problems[kind]
            self._cache[key] = accumulation_pass(model, loss_fn, x, y, steps, scale_loss=scale_loss)
        return self._cache[key]

    def update(self) -> None:
        import matplotlib.pyplot as plt

        from llmlab.accumulation import relative_difference
        from llmlab.plotting import subplots

        kind, K, scale = self.model_kind.value, self.steps.value, self.scale_loss.value
        big, acc = self._pass(kind, 1, True), self._pass(kind, K, scale)
        grad_gap = relative_difference(acc.grads, big.grads)
        stats_gap = relative_difference(acc.running_stats, big.running_stats) if big.running_stats else None
        self.last = {"kind": kind, "steps": K, "scale_loss": scale, "grad_difference": grad_gap,
                     "running_stats_difference": stats_gap}
        if grad_gap < 1e-5:
            verdict = "equal to rounding"
        elif not scale and abs(grad_gap - (K - 1)) < 1e-3 * K:
            verdict = f"= K &minus; 1: the gradient is {K}&times; too large"
        else:
            verdict = "a different gradient"
        stats_line = ("this model has no BatchNorm, hence no running statistics" if stats_gap is None else
                      f"BN running stats after {K} update(s) vs 1: relative difference <b>{stats_gap:.3g}</b>")
        self.readout.value = (
            f"<b>{self._LABELS[kind]}</b>, batch {self.batch_size} = {K} &times; {self.batch_size // K}, "
            f"loss {'divided' if scale else '<i>not</i> divided'} by K<br>"
            f"&Vert;g<sub>acc</sub> &minus; g<sub>big</sub>&Vert; / &Vert;g<sub>big</sub>&Vert; = "
            f"<b>{grad_gap:.3g}</b> ({verdict})<br>{stats_line}"
        )
        ks = [k for k in self.steps.options if k > 1]
        gaps = [relative_difference(self._pass(kind, k, scale).grads, big.grads) for k in ks]
        with self.plot:
            self.plot.clear_output(wait=True)
            fig, (ax_g, ax_s) = subplots(1, 2, width=7.0, height=2.6)
            floor = 1e-9  # fixed axis so switching model or checkbox shows the jump; rounding sits below 1e-6
            ax_g.plot(ks, [max(g, floor) for g in gaps], "o-")
            ax_g.axhspan(floor, 1e-6, color="0.9", zorder=0, label="rounding (float32)")
            ax_g.set_xscale("log", base=2)
            ax_g.set_yscale("log")
            ax_g.set_ylim(floor / 2, 2.0 * self.batch_size)
            if K > 1:
                ax_g.plot([K], [max(grad_gap, floor)], "o", color="C1", markersize=9, label=f"K = {K}")
            ax_g.legend(fontsize=8, loc="center right")
            ax_g.set(xlabel="accumulation steps K", ylabel="relative gradient gap", title="gradient")
            if stats_gap is None:
                ax_s.text(0.5, 0.5, "no BatchNorm,\nno running statistics", ha="center", va="center")
                ax_s.set_axis_off()
            else:
                name = next(iter(big.running_stats))  # first BN layer's running_mean
                channels = range(len(big.running_stats[name]))
                ax_s.plot(channels, big.running_stats[name].cpu(), "o-", label="1 big batch")
                ax_s.plot(channels, acc.running_stats[name].cpu(), "s--", label=f"{K} micro-batches")
                ax_s.set(xlabel="channel", ylabel="running mean", title="first BatchNorm: running mean")
                ax_s.legend(fontsize=8)
            plt.show()
            plt.close(fig)


def accumulation_explorer(**kwargs) -> AccumulationExplorer:
    """The notebook 04 widget: see :class:`AccumulationExplorer` (keywords: batch_size, steps, kind, scale_loss, seed)."""
    return AccumulationExplorer(**kwargs)
# === end: accumulation ===

# === section: checkpointing ===
class CheckpointingWidget:
    """Sliders for the depth ``n`` and the number of segments; a table and a plot of the cost.

    ``.n`` and ``.segments`` are the sliders, ``.readout`` (HTML) the measured table for
    store_all / sqrt with ``segments`` / recompute_all, ``.plot`` (Output) the theoretical
    memory and forward calls over all segment counts with the current one marked, ``.last`` the
    last measured :class:`llmlab.checkpointing.CheckpointStats` per strategy.
    """

    def __init__(self, *, n_max: int = 64, width: int = 64, batch: int = 16, n: int = 36, seed: int = 0):
        import torch

        from llmlab.checkpointing import default_segments, make_chain

        if not 1 <= n <= n_max:
            raise ValueError(f"n must be in [1, n_max={n_max}], got {n}")
        # One deep chain built once; a callback measures its first n blocks (shared modules).
        self._chain = make_chain(n_max, width, seed=seed)
        self._x = torch.randn(batch, width, generator=torch.Generator().manual_seed(seed + 1))
        self.act_bytes = batch * width * self._x.element_size()
        self.n = W.IntSlider(value=n, min=1, max=n_max, description="layers n", continuous_update=False)
        self.segments = W.IntSlider(value=default_segments(n), min=1, max=n, description="segments",
                                    continuous_update=False)
        self.readout = W.HTML()
        self.plot = W.Output()
        self.last: dict = {}
        self._moving_n = False
        self.n.observe(self._on_n, names="value")
        self.segments.observe(lambda _: None if self._moving_n else self.update(), names="value")
        self.widget = W.VBox([W.HBox([self.n, self.segments]), self.readout, self.plot])
        self.update()

    def _on_n(self, change) -> None:
        from llmlab.checkpointing import default_segments

        n = change["new"]
        self._moving_n = True  # one update for the new n, not one per segments change on the way
        try:
            with self.segments.hold_trait_notifications():
                self.segments.max = n
                self.segments.value = default_segments(n)
        finally:
            self._moving_n = False
        self.update()

    def update(self) -> None:
        import matplotlib.pyplot as plt

        from llmlab.checkpointing import measure, theory_forward_calls, theory_saved_activations
        from llmlab.plotting import subplots

        n, s = self.n.value, min(self.segments.value, self.n.value)
        model = self._chain[:n]
        self.last = {
            "store_all": measure(model, self._x, "store_all"),
            "sqrt": measure(model, self._x, "sqrt", segments=s),
            "recompute_all": measure(model, self._x, "recompute_all"),
        }
        a = self.act_bytes
        rows = "".join(
            f"<tr><td>{name}</td><td>{st.peak_saved_bytes / a:.0f}</td><td>{st.peak_saved_bytes / 1024:.1f}</td>"
            f"<td>{st.forward_calls}</td><td>{st.forward_calls - n}</td></tr>"
            for name, st in [("store_all", self.last["store_all"]), (f"sqrt, {s} segments", self.last["sqrt"]),
                             ("recompute_all", self.last["recompute_all"])]
        )
        self.readout.value = (
            f"<b>n = {n} layers, {s} segments</b> (sqrt n = {n ** 0.5:.1f}); measured:"
            "<table><tr><th>strategy</th><th>saved activations</th><th>KiB</th>"
            f"<th>layer forwards</th><th>recomputed</th></tr>{rows}</table>"
        )
        seg = list(range(1, n + 1))
        with self.plot:
            self.plot.clear_output(wait=True)
            fig, (ax_m, ax_f) = subplots(1, 2, width=7.0, height=2.6)
            ax_m.plot(seg, [theory_saved_activations(n, "sqrt", k) for k in seg], label="segments + last segment")
            ax_m.plot([s], [self.last["sqrt"].peak_saved_bytes / a], "o", color="C1", label="measured")
            ax_m.set(xlabel="segments", ylabel="saved activations", title="memory")
            ax_m.legend(fontsize=8)
            ax_f.plot(seg, [theory_forward_calls(n, "sqrt", k) for k in seg])
            ax_f.plot([s], [self.last["sqrt"].forward_calls], "o", color="C1")
            ax_f.set(xlabel="segments", ylabel="layer forwards", title="compute")
            plt.show()
            plt.close(fig)


def checkpointing_widget(**kwargs) -> CheckpointingWidget:
    """The notebook 05 widget: see :class:`CheckpointingWidget` (keywords: n_max, width, batch, n, seed)."""
    return CheckpointingWidget(**kwargs)
# === end: checkpointing ===

# === section: lora ===
class LoRARankExplorer:
    """Slide the LoRA rank r and read off what it costs and what it can express (topic 7).

    ``delta_W``: a weight update (m, n) from real full fine-tuning; its singular values are
    computed once, so a slider step only sums a few numbers. ``layer_shapes``: the (m, n) of every
    layer LoRA adapts in a model (default: just ``delta_W``'s layer), used for the model-wide
    trainable count and the Adam optimizer-state bytes (2 floats of ``bytes_per_float`` per
    trainable parameter). Control: ``.r`` (IntSlider). Readout: ``.readout`` (HTML) with the text
    of :meth:`readout_for`. Display ``.widget``.
    """

    def __init__(self, delta_W, layer_shapes=None, *, r=8, max_r=None, bytes_per_float=4):
        import torch

        from llmlab.lora import break_even_rank, lora_param_count, truncation_error

        if not torch.is_tensor(delta_W) or delta_W.dim() != 2:
            raise ValueError("delta_W must be a 2-D tensor (m, n)")
        self._lora_param_count = lora_param_count
        self.m, self.n = delta_W.shape
        self.layer_shapes = [tuple(s) for s in (layer_shapes or [(self.m, self.n)])]
        full_rank = min(self.m, self.n)
        max_r = full_rank if max_r is None else int(max_r)
        if not 1 <= max_r <= full_rank:
            raise ValueError(f"max_r must be in [1, {full_rank}], got {max_r}")
        self.bytes_per_float = bytes_per_float
        self.break_even = break_even_rank(self.m, self.n)
        self.errors = truncation_error(delta_W, list(range(max_r + 1))).tolist()  # the one SVD
        self.full_params = sum(m * n for m, n in self.layer_shapes)
        self.r = W.IntSlider(value=min(max(int(r), 1), max_r), min=1, max=max_r, description="rank r",
                             continuous_update=True, layout=W.Layout(width="420px"))
        self.readout = W.HTML()
        self.r.add_class("llmlab-lora-r")
        self.readout.add_class("llmlab-lora-readout")
        self.widget = W.VBox([self.r, self.readout])
        self.widget.add_class("llmlab-lora-explorer")
        self.r.observe(lambda change: self.redraw(), names="value")
        self.redraw()

    def numbers(self, r: int) -> dict:
        """Everything the readout shows for rank ``r``, as numbers."""
        layer = self._lora_param_count(self.m, self.n, r)
        trainable = sum(self._lora_param_count(m, n, r) for m, n in self.layer_shapes)
        return {
            "r": r, "layer_params": layer, "layer_full": self.m * self.n,
            "trainable": trainable, "full": self.full_params,
            "adam_bytes": 2 * self.bytes_per_float * trainable,
            "adam_bytes_full": 2 * self.bytes_per_float * self.full_params,
            "error": self.errors[r], "saves": r < self.break_even,
        }

    def readout_for(self, r: int) -> str:
        x = self.numbers(r)
        return (f"layer {self.m}×{self.n}: r(m+n) = {x['layer_params']:,} vs mn = {x['layer_full']:,} "
                f"({'fewer' if x['saves'] else 'NOT fewer'}: break-even r < {self.break_even:.1f})<br>"
                f"model: {x['trainable']:,} trainable of {x['full']:,} adapted weights "
                f"({100 * x['trainable'] / x['full']:.2f}%) · Adam states {x['adam_bytes'] / 2**20:.2f} MiB "
                f"vs {x['adam_bytes_full'] / 2**20:.1f} MiB for full fine-tuning<br>"
                f"best rank-{r} approximation of the full fine-tuning ΔW: relative error {x['error']:.3f}")

    def redraw(self) -> None:
        self.readout.value = self.readout_for(self.r.value)


def lora_rank_explorer(delta_W, layer_shapes=None, **kwargs) -> LoRARankExplorer:
    """Build the :class:`LoRARankExplorer` (see there); display its ``.widget``."""
    return LoRARankExplorer(delta_W, layer_shapes, **kwargs)
# === end: lora ===

# === section: precision ===
class PrecisionWidget:
    """A slider for the relative update ``u / w`` and one for the weight ``w``: does ``w + u``
    survive in fp16, bf16 and fp32? Plus a parameter-count slider and an optimizer menu for the
    model-state ledger in fp32 vs mixed precision.

    ``.update`` (log slider), ``.weight``, ``.params_m`` (millions of parameters) and ``.optimizer``
    are the controls; ``.readout`` (HTML) shows the three formats, ``.ledger`` (HTML) the bytes;
    ``.last`` holds the last survival dict {dtype name: bool} and ledgers {precision: StateLedger}.
    """

    def __init__(self, *, update: float = 1e-4, weight: float = 1.0, params_m: float = 135.0, optimizer: str = "adamw"):
        from llmlab.precision import OPTIMIZER_STATES

        if not 1e-8 <= update <= 1.0:
            raise ValueError(f"update must be in [1e-8, 1], got {update}")
        if not 0.01 <= weight <= 1000:
            raise ValueError(f"weight must be in [0.01, 1000], got {weight}")
        if optimizer not in OPTIMIZER_STATES:
            raise ValueError(f"optimizer must be one of {list(OPTIMIZER_STATES)}, got {optimizer!r}")
        self.update = W.FloatLogSlider(value=update, base=10, min=-8, max=0, step=0.05, description="u / w",
                                       readout_format=".2e", continuous_update=False)
        self.weight = W.FloatLogSlider(value=weight, base=10, min=-2, max=3, step=0.05, description="weight w",
                                       readout_format=".3g", continuous_update=False)
        self.params_m = W.FloatLogSlider(value=params_m, base=10, min=0, max=5, step=0.05, description="params (M)",
                                         readout_format=".4g", continuous_update=False)
        self.optimizer = W.Dropdown(options=list(OPTIMIZER_STATES), value=optimizer, description="optimizer")
        self.readout, self.ledger = W.HTML(), W.HTML()
        self.last: dict = {}
        for control in (self.update, self.weight, self.params_m, self.optimizer):
            control.observe(lambda _: self.refresh(), names="value")
        self.widget = W.VBox([W.HBox([self.update, self.weight]), self.readout,
                              W.HBox([self.params_m, self.optimizer]), self.ledger])
        self.refresh()

    def refresh(self) -> None:
        import torch

        from llmlab.precision import memory_ledger, smallest_surviving_update, update_survives

        w, r = self.weight.value, self.update.value
        rows, survives = [], {}
        for dtype in (torch.float16, torch.bfloat16, torch.float32):
            name = str(dtype).replace("torch.", "")
            w_d = torch.tensor(w, dtype=dtype)
            total = w_d + torch.tensor(w * r, dtype=dtype)
            survives[name] = update_survives(w, w * r, dtype)
            threshold = smallest_surviving_update(dtype, w)
            mark = "kept" if survives[name] else "<b>lost</b>"
            rows.append(f"<tr><td>{name}</td><td>{float(w_d):.8g}</td><td>{float(total):.8g}</td>"
                        f"<td>{mark}</td><td>{threshold:.3e}</td></tr>")
        n = int(round(self.params_m.value * 1e6))
        ledgers = {p: memory_ledger(n, optimizer=self.optimizer.value, precision=p) for p in ("fp32", "mixed")}
        self.last = {"survives": survives, "ledgers": ledgers}
        self.readout.value = (
            f"<b>w = {w:.4g}, update u = {w * r:.3e}</b> (u / w = {r:.2e})"
            "<table><tr><th>format</th><th>w in format</th><th>w + u</th><th>update</th>"
            f"<th>smallest surviving u / w</th></tr>{''.join(rows)}</table>"
        )
        keys = ("weights", "grads", "master_weights", "optimizer_states", "total")
        body = "".join(
            f"<tr><td>{p}</td>" + "".join(f"<td>{getattr(led, k) / 2**30:.2f}</td>" for k in keys)
            + f"<td>{led.total / max(n, 1):.0f}</td></tr>" for p, led in ledgers.items())
        self.ledger.value = (
            f"<b>{n / 1e6:.4g} M parameters, {self.optimizer.value}</b>: model states in GiB"
            "<table><tr><th></th>" + "".join(f"<th>{k}</th>" for k in keys) + f"<th>B/param</th></tr>{body}</table>"
        )


def precision_widget(**kwargs) -> PrecisionWidget:
    """The notebook 08 widget: see :class:`PrecisionWidget` (keywords: update, weight, params_m, optimizer)."""
    return PrecisionWidget(**kwargs)
# === end: precision ===
