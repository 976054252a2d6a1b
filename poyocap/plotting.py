"""One figure style and a byte-stable ``save_figure``.

PNG files carry no timestamp (we pass ``metadata={"Software": None}``) and PDF files get a fixed
``CreationDate``/``ModDate``; matplotlib's hatch/font ids are deterministic once ``svg.hashsalt`` is fixed.
Two runs that draw the same data therefore write identical bytes (tested).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import matplotlib.pyplot as plt  # headless runs set MPLBACKEND=Agg; notebooks use the inline backend

from .filtering import short_name

#: Colours used for the two groups of the partition, everywhere.
PREDICTABLE_COLOR = "#1b9e77"
UNPREDICTABLE_COLOR = "#d95f02"

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 120,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "svg.hashsalt": "poyocap",
    "pdf.compression": 6,
}


def use_style() -> None:
    """Apply the project style (idempotent)."""
    plt.rcParams.update(STYLE)


def synthetic_label(fig: plt.Figure, source: str) -> None:
    """Stamp 'SYNTHETIC DATA' on a figure fed by the synthetic observatory (every such figure must carry it)."""
    if source == "synthetic":
        fig.text(0.995, 0.005, "SYNTHETIC DATA", ha="right", va="bottom", fontsize=7, color="#b00020",
                 fontweight="bold", alpha=0.8)


def save_figure(fig: plt.Figure, path: str | Path, pdf: bool = True, close: bool = False) -> Path:
    """Write ``path`` (PNG) and, if ``pdf``, the same figure as PDF; both byte-stable.

    Returns the PNG path. The figure stays open unless ``close`` so a notebook can still display it.
    """
    path = Path(path).with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None}, bbox_inches="tight")
    if pdf:
        fig.savefig(
            path.with_suffix(".pdf"), format="pdf", bbox_inches="tight",
            metadata={"Creator": None, "Producer": None, "CreationDate": None, "ModDate": None},
        )
    if close:
        plt.close(fig)
    return path


use_style()


# ------------------------------------------------------------------------------------------------- tables
def markdown_table(df: "pd.DataFrame", floatfmt: str = ".3f") -> str:  # noqa: F821
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    def fmt(v: object) -> str:
        if isinstance(v, float):
            return format(v, floatfmt)
        return str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def save_table(df: "pd.DataFrame", stem: str | Path, header: list[str], floatfmt: str = ".4f") -> Path:  # noqa: F821
    """Write ``stem.csv`` (header lines as ``# ...`` comments; read back with ``pd.read_csv(p, comment="#")``)
    and ``stem.md`` (header as a paragraph, then the table). Byte-stable: floats are formatted, no timestamps."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    with open(stem.with_suffix(".csv"), "w", newline="") as fh:
        for line in header:
            fh.write(f"# {line}\n")
        df.to_csv(fh, index=False, float_format=f"%{floatfmt}")
    md = "\n".join([*(f"> {line}  " for line in header), "", markdown_table(df, floatfmt), ""])
    stem.with_suffix(".md").write_text(md)
    return stem.with_suffix(".csv")


# ------------------------------------------------------------------------------------------------ figures
def plot_example_traces(recordings: list, source: str, seconds: float = 60.0, per_line: int = 2) -> plt.Figure:
    """dF/F of ``per_line`` ROIs per Cre line over the first ``seconds`` of the grating block (one row/line)."""
    lines = list(dict.fromkeys(r.cre_line for r in recordings))
    fig, axes = plt.subplots(len(lines), 1, figsize=(8, 0.75 * len(lines) + 0.6), sharex=True)
    axes = np.atleast_1d(axes)
    for ax, line in zip(axes, lines):
        rec = next(r for r in recordings if r.cre_line == line)
        t0 = int(np.searchsorted(rec.timestamps, rec.grating_trials["start"][0] - 2.0))
        n = int(seconds * rec.sampling_rate_hz)
        t = rec.timestamps[t0:t0 + n] - rec.timestamps[t0]
        for j in range(min(per_line, rec.n_units)):
            ax.plot(t, rec.dff[t0:t0 + n, j] + 1.0 * j, lw=0.6)
        for a, b in zip(rec.grating_trials["start"], rec.grating_trials["stop"]):
            a, b = a - rec.timestamps[t0], b - rec.timestamps[t0]
            if 0 <= a <= seconds:
                ax.axvspan(a, min(b, seconds), color="0.9", lw=0)
        ax.set_ylabel(short_name(line), rotation=0, ha="right", va="center")
        ax.set_yticks([])
    axes[-1].set_xlabel("time from grating block onset (s); grey = grating on")
    fig.suptitle("Example dF/F traces per Cre line (offset by 1 dF/F)")
    synthetic_label(fig, source)
    return fig


def plot_stimuli(recording: object, source: str, n_frames: int = 6) -> plt.Figure:
    """A few frames of the movie the sessions show (synthetic: procedural, from scikit-image photographs)."""
    movie = recording.movie
    idx = np.linspace(0, movie.shape[0] - 1, n_frames).astype(int)
    fig, axes = plt.subplots(1, n_frames, figsize=(1.6 * n_frames, 1.2))
    for ax, i in zip(axes, idx):
        ax.imshow(movie[i], cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"frame {i}", fontsize=7)
        ax.axis("off")
    fig.suptitle(f"Movie frames ({movie.shape[1]}x{movie.shape[2]}, {movie.shape[0]} frames at 30 fps)", fontsize=9)
    synthetic_label(fig, source)
    return fig


def plot_line_statistics(stats: "pd.DataFrame", source: str, kurtosis_col: str = "kurtosis_pearson") -> plt.Figure:  # noqa: F821
    """Per-line validation statistics: skewness, kurtosis, noise, fitted vs Allen decay, OSI, movie reliability."""
    names = [short_name(l) for l in stats["cre_line"]]
    x = np.arange(len(names))
    panels = [("skewness", "mean skewness"), (kurtosis_col, "mean kurtosis (log)"),
              ("noise_sd_dff", "noise SD (dF/F)"), ("decay_fit_s", "decay (s): fit vs Allen"),
              ("osi", "orientation selectivity"), ("movie_reliability", "movie repeat reliability")]
    fig, axes = plt.subplots(2, 3, figsize=(10, 5))
    for ax, (col, title) in zip(axes.ravel(), panels):
        ax.bar(x, stats[col], color="0.55")
        if col == "decay_fit_s":
            ax.plot(x, stats["decay_allen_s"], "o", color="#b00020", ms=4, label="Allen constant")
            ax.legend(fontsize=7)
        if col == kurtosis_col:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=70, fontsize=7)
    fig.tight_layout()
    synthetic_label(fig, source)
    return fig


def plot_regularity_scatter(neurons: "pd.DataFrame", lines: "pd.DataFrame", partition: object,  # noqa: F821
                            source: str) -> plt.Figure:
    """Per-neuron skewness vs kurtosis clouds, per-line means, thresholds; predictable lines coloured."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ok = neurons[neurons["ok"]]
    pred = set(partition.predictable_lines)
    ax.scatter(ok["skewness"], ok["kurtosis"], s=3, alpha=0.25, lw=0,
               c=[PREDICTABLE_COLOR if l in pred else UNPREDICTABLE_COLOR for l in ok["cre_line"]])
    for _, row in lines.iterrows():
        color = PREDICTABLE_COLOR if row["cre_line"] in pred else UNPREDICTABLE_COLOR
        ax.scatter(row["skewness_mean"], row["kurtosis_mean"], s=40, color=color, edgecolor="k", zorder=3)
        ax.annotate(short_name(row["cre_line"]), (row["skewness_mean"], row["kurtosis_mean"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.axvline(partition.thresholds["skewness"], color="k", ls="--", lw=0.8)
    ax.axhline(partition.thresholds["kurtosis"], color="k", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("skewness of dF/F")
    ax.set_ylabel(f"kurtosis of dF/F ({partition.kurtosis_convention}), log")
    ax.set_title(f"Regularity per neuron (dots) and per line (circles); thresholds: "
                 f"skew <= {partition.thresholds['skewness']:.2f}, kurt <= {partition.thresholds['kurtosis']:.2f}")
    ax.scatter([], [], color=PREDICTABLE_COLOR, label="predictable")
    ax.scatter([], [], color=UNPREDICTABLE_COLOR, label="unpredictable")
    ax.legend(loc="lower right")
    synthetic_label(fig, source)
    return fig


def plot_knees(lines: "pd.DataFrame", partition: object, source: str) -> plt.Figure:  # noqa: F821
    """Sorted per-line means with the detected knee, for skewness and kurtosis."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    pred = set(partition.predictable_lines)
    for ax, stat in zip(axes, ("skewness", "kurtosis")):
        srt = lines.sort_values(f"{stat}_mean")
        y = srt[f"{stat}_mean"].to_numpy()
        x = np.arange(len(y))
        ax.plot(x, y, "-", color="0.6")
        ax.scatter(x, y, c=[PREDICTABLE_COLOR if l in pred else UNPREDICTABLE_COLOR for l in srt["cre_line"]],
                   zorder=3)
        ax.axhline(partition.thresholds[stat], color="k", ls="--", lw=0.8,
                   label=f"knee threshold {partition.thresholds[stat]:.2f}")
        ax.set_xticks(x)
        ax.set_xticklabels([short_name(l) for l in srt["cre_line"]], rotation=70, fontsize=7)
        ax.set_ylabel(f"mean {stat}")
        ax.legend(fontsize=7)
    fig.suptitle("Sorted per-line means and the knee threshold (kneed; end of the flat, regular segment)")
    fig.tight_layout()
    synthetic_label(fig, source)
    return fig


def plot_bootstrap(boot: "pd.DataFrame", partition: object, source: str) -> plt.Figure:  # noqa: F821
    """How often each line is called predictable under bootstrap resampling of mice and neurons."""
    srt = boot.sort_values("p_predictable", ascending=False)
    pred = set(partition.predictable_lines)
    fig, ax = plt.subplots(figsize=(6.5, 3))
    ax.bar([short_name(l) for l in srt["cre_line"]], srt["p_predictable"],
           color=[PREDICTABLE_COLOR if l in pred else UNPREDICTABLE_COLOR for l in srt["cre_line"]])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("P(called predictable)")
    n_boot = int(srt["n_boot"].iloc[0])
    ax.set_title(f"Bootstrap stability over mice and neurons ({n_boot} replicates)")
    ax.tick_params(axis="x", rotation=70, labelsize=7)
    synthetic_label(fig, source)
    return fig


def plot_pretraining_curves(histories: dict, source: str, smooth: int = 10) -> plt.Figure:
    """Per seed: latent reconstruction loss, orientation CE, std(Z_L) of the training batches (train mode), and the
    eval-mode collapse monitor on held-out windows (within-session std solid, effective rank dashed; / step 0)."""
    fig, axes = plt.subplots(1, 4, figsize=(14, 3))
    for i, (seed, h) in enumerate(histories.items()):
        tr = h[h["kind"] == "train"]
        for ax, col in zip(axes, ("recon", "ce", "std_zl")):
            if col in tr:
                y = tr[col].rolling(smooth, min_periods=1).mean()
                ax.plot(tr["step"], y, label=f"seed {seed}", lw=1, color=f"C{i}")
        ev = h[h["kind"] == "eval"] if "within_std" in h else h.iloc[:0]
        if len(ev):
            axes[3].plot(ev["step"], ev["within_std"] / ev["within_std"].iloc[0], lw=1, color=f"C{i}", marker=".")
            axes[3].plot(ev["step"], ev["eff_rank"] / ev["eff_rank"].iloc[0], lw=1, ls="--", color=f"C{i}")
    axes[3].axhline(0.5, color="#b00020", ls=":", lw=0.8)
    for ax, title in zip(axes, ("masked latent reconstruction (train)", "orientation CE (train, windows w/ trial)",
                                "std(Z_L), training batches", "held-out, eval mode: within-session\nstd (-) and "
                                "effective rank (--) / step 0")):
        ax.set_title(title)
        ax.set_xlabel("step")
    axes[0].legend()
    fig.tight_layout()
    synthetic_label(fig, source)
    return fig


def plot_pretraining_checks(summary: "pd.DataFrame", source: str) -> plt.Figure:  # noqa: F821
    """The checks: masked reconstruction vs copy-last, probes pretrained vs random, collapse (std over all windows,
    std within session, effective rank; each pretrained / random init)."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    seeds = summary["seed"].astype(str).tolist()
    x = np.arange(len(seeds))
    w = 0.38
    axes[0].bar(x - w / 2, summary["val_masked_l1"], w, label="model (masked view)")
    axes[0].bar(x + w / 2, summary["val_copy_last_l1"], w, label="copy last latent")
    axes[0].set_title("held-out masked-latent L1 (lower is better)")
    for i, probe in enumerate(("grating", "movie")):
        axes[1].bar(x + (i - 0.5) * w, summary[f"probe_{probe}_pretrained"], w / 2, label=f"{probe}: pretrained",
                    color=f"C{2 * i}")
        axes[1].bar(x + (i - 0.5) * w + w / 2, summary[f"probe_{probe}_random"], w / 2, label=f"{probe}: random init",
                    color=f"C{2 * i + 1}")
    axes[1].set_title("linear probes on frozen Z_L (accuracy)")
    for i, (col, label) in enumerate((("std_ratio", "std, all windows"), ("within_std_ratio", "std within session"),
                                      ("eff_rank_ratio", "effective rank"))):
        if col in summary:
            axes[2].bar(x + (i - 1) * w / 1.5, summary[col], w / 1.5, label=label, color=f"{0.3 + 0.25 * i}")
    axes[2].axhline(0.5, color="#b00020", ls="--", lw=0.8, label="50 % of init")
    axes[2].set_title("held-out Z_L: pretrained / random init")
    for ax in axes:
        ax.set_xticks(x)
        ax.set_xticklabels([f"seed {s}" for s in seeds])
        ax.legend(fontsize=6)
    fig.tight_layout()
    synthetic_label(fig, source)
    return fig


def _image_grid(examples: dict, targets: "torch.Tensor", columns: np.ndarray, title: str, source: str,  # noqa: F821
                cell: tuple[float, float, float], fontsize: int) -> plt.Figure:
    """Rows: the true frames, then each entry of ``examples``; columns: the items ``columns``; ``cell``: inches
    per column, per row, and the title's extra height."""
    rows = ["true"] + list(examples)
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(cell[0] * len(columns), cell[1] * len(rows) + cell[2]),
                             squeeze=False)
    for r, name in enumerate(rows):
        imgs = targets if name == "true" else examples[name]
        for c, i in enumerate(columns):
            ax = axes[r, c]
            ax.imshow(imgs[i].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=fontsize)
    fig.suptitle(title)
    synthetic_label(fig, source)
    return fig


def plot_reconstructions(examples: dict, targets: "torch.Tensor", source: str, n: int = 6) -> plt.Figure:  # noqa: F821
    """True test frames (top row) and each method's reconstruction of the same windows (first seed)."""
    return _image_grid(examples, targets, np.linspace(0, len(targets) - 1, n).astype(int),
                       "Test frames and reconstructions (first seed)", source, (1.7, 1.0, 0.3), 7)


def strip_start(targets: "torch.Tensor", n: int) -> int:  # noqa: F821
    """Where ``n`` consecutive true frames ``(N, H, W)`` change most (summed mean absolute frame-to-frame
    difference): a strip over a still shot cannot show whether a prediction follows the movie. Uses the true frames
    only, never a prediction."""
    frames = targets.float().reshape(len(targets), -1)
    if len(frames) <= n:
        return 0
    change = (frames[1:] - frames[:-1]).abs().mean(1).cpu().numpy()  # (N - 1,)
    return int(np.argmax(np.convolve(change, np.ones(n - 1), mode="valid")))


def plot_strip(examples: dict, targets: "torch.Tensor", source: str, n: int = 12) -> plt.Figure:  # noqa: F821
    """``n`` consecutive test windows (frames of the first test session, evenly subsampled) and every method's and
    reference's reconstruction of them: does the prediction follow the movie? The strip starts where the true frames
    change most (:func:`strip_start`)."""
    start = strip_start(targets, n)
    return _image_grid(examples, targets, np.arange(start, min(start + n, len(targets))),
                       f"Consecutive test frames {start}-{start + n - 1} (first test session, left to right in time; "
                       "the stretch where the true movie changes most) and reconstructions", source, (1.1, 0.75, 0.4),
                       6)


def plot_learning_curves(histories: dict, source: str, metric_label: str,
                         references: dict[str, float] | None = None) -> plt.Figure:
    """Validation score over steps, per method (all seeds), with the training loss beside it; ``references``
    (name -> validation score of a linear reference) are drawn as horizontal lines: the bar to clear."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 3))
    for i, (name, value) in enumerate((references or {}).items()):
        axes[1].axhline(value, color="0.3", ls=["--", ":", "-."][i % 3], lw=0.9, label=f"{name} (val)")
    colors: dict[str, str] = {}
    for (method, seed), h in histories.items():
        color = colors.setdefault(method, f"C{len(colors)}")
        ev = h[h["kind"] == "eval"]
        tr = h[h["kind"] == "train"]
        label = method if seed == min(s for m, s in histories if m == method) else None
        axes[0].plot(tr["step"], tr["loss"].rolling(10, min_periods=1).mean(), color=color, lw=0.8, label=label)
        axes[1].plot(ev["step"], ev["val_score"], "o-", color=color, lw=0.8, ms=2, label=label)
    axes[0].set_title("training loss")
    axes[1].set_title(f"validation {metric_label} (model selection)")
    for ax in axes:
        ax.set_xlabel("step")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)  # off the curves
    fig.tight_layout()
    synthetic_label(fig, source)
    return fig


def plot_confusion(confusion: dict, source: str) -> plt.Figure:
    """Direction confusion matrices (rows: true, columns: predicted; summed over seeds), one per method."""
    names = list(confusion)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3))
    axes = np.atleast_1d(axes)
    ticks = [f"{d}" for d in range(0, 360, 45)]
    for ax, name in zip(axes, names):
        m = confusion[name].astype(float)
        m = m / np.maximum(m.sum(1, keepdims=True), 1)
        ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        ax.set_title(name, fontsize=8)
        ax.set_xticks(range(8))
        ax.set_xticklabels(ticks, rotation=90, fontsize=6)
        ax.set_yticks(range(8))
        ax.set_yticklabels(ticks, fontsize=6)
        ax.set_xlabel("predicted direction")
    axes[0].set_ylabel("true direction")
    fig.tight_layout()
    synthetic_label(fig, source)
    return fig
