"""Pictures of patches: a Figure-4-style plot (PNG), an HTML page, a one-line terminal view (and the patcher
CLI's printout, show_patching), histograms of entropies per domain, and the summary figures of a patching:
patch_statistics (lengths), entropy_statistics (H) and boundary_quality (where patches start: word
boundaries, surprisal enrichment, size spread).

    from patch_pictures import format_patches, plot_entropies, write_html
    print(format_patches(patcher.create_patches(b"Hello, world")))      # hello,▏·world
    plot_entropies(data, H, lengths, threshold=0.6, path="patches.png")  # BLT paper, Figure 4
    write_html(data, H, lengths, "patches.html")                         # hover a character for its H

Inputs are plain arrays (bytes, H per byte in nats, patch lengths), so this module needs nothing from
the patcher; matplotlib is imported only by the plot functions. WORD_BYTE, the word bytes of DESIGN.md
(the `space` rule's and boundary_quality's), lives here so the patcher can import it without a cycle.
"""
from __future__ import annotations

import html
import os

import numpy as np

from common import atomic_write

# word bytes (DESIGN.md): ASCII letters and digits, `_`, and every byte >= 0x80 (a UTF-8 character is part of
# a word); every other byte is space-like
WORD_BYTE = np.array([(chr(b).isascii() and chr(b).isalnum()) or b == 0x5F or b >= 0x80
                      for b in range(256)])  # (256,)


def utf8_units(data: bytes) -> list[tuple[int, int, str]]:
    """(start, end, text) per character; a byte that is not part of valid UTF-8 is one U+FFFD unit."""
    units, i, n = [], 0, len(data)
    while i < n:  # display only: bounded by the caller's max_bytes
        b = data[i]
        # sequence length announced by a lead byte (0: not a valid lead byte)
        k = (1 if b < 0x80 else 2 if 0xC2 <= b <= 0xDF else 3 if 0xE0 <= b <= 0xEF
             else 4 if 0xF0 <= b <= 0xF4 else 0)
        if k:
            try:
                units.append((i, i + k, data[i:i + k].decode("utf-8")))
                i += k
                continue
            except UnicodeDecodeError:
                pass
        units.append((i, i + 1, "\ufffd"))
        i += 1
    return units


VISIBLE = {ord(" "): "·", ord("\n"): "↵", ord("\t"): "→", ord("\r"): "␍"}
VISIBLE.update({c: f"\\x{c:02x}" for c in list(range(32)) + [127] if c not in VISIBLE})


def visible(text: str) -> str:
    """Whitespace and control characters made visible (space -> ·, newline -> ↵, tab -> →)."""
    return text.translate(VISIBLE)


def format_patches(patches, sep: str = "▏") -> str:
    """Patches (list of bytes) as one line of text, `sep` between patches and whitespace made visible.
    A patch that cuts a UTF-8 character shows U+FFFD on both sides of the cut."""
    return sep.join(visible(bytes(p).decode("utf-8", errors="replace")) for p in patches)


def plot_entropies(data, entropies, lengths, threshold, path, max_bytes: int = 300, title: str | None = None):
    """Save a plot of H per byte (nats), the threshold (None: no line), the patch boundaries (vertical lines)
    and the characters under the x axis, as in the BLT paper's Figure 4. Shows the first max_bytes bytes."""
    # here: only plots need matplotlib; Figure avoids pyplot's global state
    from matplotlib.figure import Figure

    data = bytes(data)
    h = np.asarray(entropies, dtype=np.float64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if h.shape != (len(data),) or int(lengths.sum()) != len(data):
        raise ValueError("plot_entropies needs one entropy per byte and lengths summing to the bytes")
    n = min(len(data), max_bytes)
    starts = np.cumsum(lengths) - lengths  # (P,) first byte of each patch
    starts = starts[(starts > 0) & (starts < n)]
    labels = [""] * n
    for a, _, text in utf8_units(data[:n]):
        labels[a] = {" ": "·", "\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(text, visible(text))
    fig = Figure(figsize=(min(max(8.0, 0.13 * n + 1.5), 60.0), 3.6))  # about one character width per byte
    ax = fig.add_subplot()
    x = np.arange(n)
    ax.plot(x, h[:n], marker="o", markersize=2.5, linewidth=1.0, color="tab:blue", label="entropy H[i]")
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=1.0,
                   label=f"threshold {threshold:.4g}")
    if starts.size:
        ax.vlines(starts - 0.5, 0, 1, transform=ax.get_xaxis_transform(), color="0.45", linewidth=0.8,
                  label="patch start")
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=7, family="monospace")
    ax.tick_params(axis="x", length=0)
    ax.set_xlim(-0.5, max(n, 1) - 0.5)
    ax.set_ylabel("entropy (nats)")
    note = f" (first {n} of {len(data)} bytes shown)" if n < len(data) else ""
    ax.set_title((title or f"{len(lengths)} patches over {len(data)} bytes") + note, fontsize=9)
    if n:
        ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_html(data, entropies, lengths, path, max_bytes: int = 100_000, title: str = "entropy patches"):
    """Save the text as HTML with alternating patch colours; hovering a character shows its bytes' H
    (entropies may be None). Invalid UTF-8 shows as U+FFFD. Shows the first max_bytes bytes."""
    data = bytes(data)
    lengths = np.asarray(lengths, dtype=np.int64)
    h = None if entropies is None else np.asarray(entropies, dtype=np.float64)
    if int(lengths.sum()) != len(data) or (h is not None and h.shape != (len(data),)):
        raise ValueError("write_html needs lengths summing to the bytes and one entropy per byte")
    n = min(len(data), max_bytes)
    # characters are decoded over the whole text, so a patch boundary inside a multi-byte character does
    # not garble it: the character is shown whole, in the patch of its first byte, and its tip says so
    patch_of = np.repeat(np.arange(len(lengths)), lengths)  # (N,) patch index of every byte
    groups: dict[int, list[str]] = {}
    for a, b, text in utf8_units(data[:n]):
        tip = f"byte {a}" + ("" if b - a == 1 else f"-{b - 1}")
        if h is not None:
            tip += ": H = " + ", ".join(f"{v:.3f}" for v in h[a:b]) + " nats"
        if patch_of[a] != patch_of[b - 1]:
            tip += " (a patch starts inside this character)"
        span = f'<span title="{html.escape(tip)}">{html.escape(text)}</span>'
        groups.setdefault(int(patch_of[a]), []).append(span)
    parts = [f'<span class="p{j % 2}">{"".join(spans)}</span>' for j, spans in groups.items()]
    note = f"<p>first {n} of {len(data)} bytes shown</p>" if n < len(data) else ""
    mean = len(data) / len(lengths) if len(lengths) else 0.0
    page = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>\n"
            "<style>body{font-family:sans-serif} .text{font-family:monospace;white-space:pre-wrap;"
            "line-height:1.6} .p0{background:#cfe3ff} .p1{background:#ffe3a8}</style></head><body>\n"
            f"<p>{len(lengths)} patches over {len(data)} bytes, mean {mean:.2f} bytes per patch; "
            f"hover a character for its entropy.</p>{note}\n<div class=\"text\">{''.join(parts)}</div>\n"
            "</body></html>\n")

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(page)

    atomic_write(path, write)


def patch_statistics(doc_lengths: list[np.ndarray]) -> dict:
    """Figures over the patch lengths of many documents (JSON-ready)."""
    lengths = np.concatenate(doc_lengths) if doc_lengths else np.zeros(0, dtype=np.int64)
    counts = np.bincount(lengths) if lengths.size else np.zeros(0, dtype=np.int64)
    return {
        "num_documents": len(doc_lengths),
        "num_bytes": int(lengths.sum()),
        "num_patches": int(lengths.size),
        "mean_patch_size": float(lengths.mean()) if lengths.size else 0.0,
        "median_patch_size": float(np.median(lengths)) if lengths.size else 0.0,
        "max_patch_size_seen": int(lengths.max()) if lengths.size else 0,
        "size_histogram": {int(k): int(v) for k, v in enumerate(counts) if v},  # patch length -> count
    }


def split_patches(data, lengths) -> list[bytes]:
    """Cut bytes into patches of the given lengths."""
    data, ends = bytes(data), np.cumsum(lengths).tolist()
    if (ends[-1] if ends else 0) != len(data):
        raise ValueError(f"patch lengths sum to {ends[-1] if ends else 0}, not to the {len(data)} bytes")
    return [data[a:b] for a, b in zip([0] + ends[:-1], ends)]


def terminal_view(data, lengths, max_bytes: int = 2000) -> str:
    """format_patches of the patches covering the first max_bytes bytes, with " ..." when cut."""
    ends = np.cumsum(np.asarray(lengths, dtype=np.int64))
    k = max(1, int(np.searchsorted(ends, max_bytes, side="right")))
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    data = bytes(data)
    patches = [data[s:e] for s, e in zip(starts[:k].tolist(), ends[:k].tolist())]
    return format_patches(patches) + (" ..." if k < len(ends) else "")


def show_patching(docs, entropies, doc_lengths, method: str, threshold, bytes_per_s=None, plot=None,
                  html_path=None) -> dict:
    """What entropy_patcher.py prints for a patching: the first document's patches (terminal_view) and a
    summary line; with plot / html_path, that document's plot_entropies (threshold None: no line) and
    write_html. Returns patch_statistics(doc_lengths)."""
    stats = patch_statistics(doc_lengths)
    print(terminal_view(docs[0], doc_lengths[0]))
    speed = f", entropy model {bytes_per_s:,.0f} bytes/s" if bytes_per_s else ""
    print(f"{method}: {stats['num_bytes']} bytes in {stats['num_documents']} document(s) -> "
          f"{stats['num_patches']} patches, mean {stats['mean_patch_size']:.2f}, median "
          f"{stats['median_patch_size']:.1f} bytes{speed}")
    if plot:
        plot_entropies(docs[0], entropies[0], doc_lengths[0], threshold, plot, title=f"{method} patching")
        print(f"plot: {plot}")
    if html_path:
        write_html(docs[0], None if entropies is None else entropies[0], doc_lengths[0], html_path)
        print(f"html: {html_path}")
    return stats


def patch_start_flags(lengths, n: int) -> np.ndarray:
    """(N,) bool: True at the first byte of every patch."""
    flags = np.zeros(n, dtype=bool)
    lengths = np.asarray(lengths, dtype=np.int64)
    if int(lengths.sum()) != n:
        raise ValueError(f"patch lengths sum to {int(lengths.sum())}, not to the {n} bytes")
    flags[np.cumsum(lengths) - lengths] = True
    return flags


def boundary_quality(docs, doc_lengths, surprisal=None) -> dict:
    """Where a patching puts its starts (DESIGN.md, the comparison protocol), JSON-ready. Byte 0 of every
    document starts a patch whatever the rule, so it is left out of every share and mean below.

    word_boundary_fraction   share of patch starts that cut no word: byte i is on a word boundary unless
                             bytes i-1 and i are both word bytes (WORD_BYTE)
    word_boundary_base_rate  the same share over all bytes: what starts at random positions would give
    boundary_enrichment      mean surprisal of patch-start bytes / mean surprisal of the other bytes, where
                             surprisal[d][i] = -log p(byte i) under a reference byte model (one array per
                             document, any unit); None without surprisal or where a side is empty
    mean_patch_size, median_patch_size, patch_size_cv (std / mean of the lengths; 0 for equal lengths)
    """
    starts, boundary, s_on, s_off = [], [], [], []
    for k, (d, n) in enumerate(zip(docs, doc_lengths)):
        x = np.frombuffer(bytes(d), dtype=np.uint8)
        f = patch_start_flags(n, len(x))[1:]  # (N-1,) starts of bytes 1..N-1
        w = WORD_BYTE[x]
        starts.append(f)
        boundary.append(~(w[1:] & w[:-1]))  # (N-1,) byte i does not continue a word
        if surprisal is not None:
            s = np.asarray(surprisal[k], dtype=np.float64)
            if s.shape != x.shape:
                raise ValueError(f"document {k}: {s.shape[0]} surprisal values for {len(x)} bytes")
            s_on.append(s[1:][f])
            s_off.append(s[1:][~f])
    f, b = (np.concatenate(a) if a else np.zeros(0, dtype=bool) for a in (starts, boundary))
    lengths = np.concatenate([np.asarray(n, dtype=np.int64) for n in doc_lengths] or [np.zeros(0, np.int64)])
    on, off = (np.concatenate(a) if a else np.zeros(0) for a in (s_on, s_off))
    mean = float(lengths.mean()) if lengths.size else 0.0
    return {"word_boundary_fraction": float(b[f].mean()) if f.any() else None,
            "word_boundary_base_rate": float(b.mean()) if b.size else None,
            "boundary_enrichment": float(on.mean() / off.mean()) if on.size and off.size and off.mean() > 0
            else None,
            "mean_patch_size": mean, "median_patch_size": float(np.median(lengths)) if lengths.size else 0.0,
            "patch_size_cv": float(lengths.std() / mean) if mean else 0.0}


def entropy_statistics(h) -> dict:
    """num_bytes, mean, std and percentiles of H (nats) over every byte, JSON-ready (zeros when empty)."""
    h = np.asarray(h, dtype=np.float64)
    stat = (lambda f: float(f(h))) if h.size else (lambda f: 0.0)
    return {"num_bytes": int(h.size), "mean": stat(np.mean), "std": stat(np.std),
            "percentiles": {p: stat(lambda a, p=p: np.percentile(a, p)) for p in (5, 10, 25, 50, 75, 90, 95)}}


def plot_entropy_histograms(entropies: dict, thresholds: dict, path, bins: int = 60):
    """Save one histogram of H (nats) per domain, stacked, with a dashed line at each domain's `global`
    threshold per target patch size. entropies: {domain: (N,) H}; thresholds: {domain: {size: t or None}}."""
    from matplotlib.figure import Figure  # only plots need matplotlib

    names = list(entropies)
    top = max([float(np.max(h)) for h in entropies.values() if len(h)] or [1.0])
    fig = Figure(figsize=(8.0, 1.0 + 2.2 * max(len(names), 1)))
    axes = fig.subplots(max(len(names), 1), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, names):
        h = np.asarray(entropies[name], dtype=np.float64)
        ax.hist(h, bins=bins, range=(0.0, top), density=True, color="tab:blue", alpha=0.7)
        for j, (size, t) in enumerate((thresholds.get(name) or {}).items()):
            if t is not None:
                ax.axvline(t, color=f"C{j + 1}", linestyle="--", linewidth=1.0,
                           label=f"{size} B/patch: {t:.3g}")
        ax.set_title(f"{name}: {h.size:,} bytes, mean H {h.mean() if h.size else 0:.3f} nats", fontsize=9)
        ax.set_ylabel("density")
        if any(t is not None for t in (thresholds.get(name) or {}).values()):
            ax.legend(loc="upper right", fontsize=7, title="global threshold", title_fontsize=7)
    axes[-1].set_xlabel("entropy H[i] (nats)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def format_analysis(result: dict) -> str:
    """entropy_patcher.analyze_entropy_distribution's dict form as text: thresholds per domain, then the
    transfer table (the threshold calibrated on A's training documents -> mean patch size on B's held-out)."""
    domains = result["domains"]
    sizes = list(next(iter(domains.values()))["thresholds_for_patch_size"]["global"])
    width = max([26] + [len(f"monotonic: {a} -> {b}") for a in domains for b in domains])

    def row(label, values):
        return f"  {label:<{width}}" + "".join(f"{v:>8.3f}" if v is not None else f"{'-':>8}" for v in values)

    head = f"  {{:<{width}}}" + "".join(f"{f'{s} B':>8}" for s in sizes)
    lines = []
    for name, d in domains.items():
        pct = ", ".join(f"p{p} {v:.2f}" for p, v in d["percentiles"].items())
        lines += [f"{name}: {d['num_bytes']:,} training bytes ({d['num_held_out_bytes']:,} held out); H mean "
                  f"{d['mean']:.3f}, std {d['std']:.3f} nats; {pct}", head.format("threshold (nats) for")]
        lines += [row(m, by_size.values()) for m, by_size in d["thresholds_for_patch_size"].items()]
    lines += ["transfer: mean patch size on B's held-out documents with the threshold calibrated on A's "
              "training documents (- : out of reach)", head.format("method: A -> B")]
    lines += [row(f"{m}: {a} -> {b}", [by_size[s][a][b] for s in sizes])
              for m, by_size in result["transfer"].items() for a in domains for b in domains]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# The study's figures (complete_entropy_workflow.py): BPB and the gap to BPE with their intervals, patch
# sizes, boundary quality as a table


def plot_study(summary: list[dict], lengths: dict, out_dir: str, paragraph=None) -> list[str]:
    """BPB against training FLOPs, the gap to BPE against budget, the patch sizes of each BLT run (lengths:
    run name -> its training documents' patch lengths) and a held-out paragraph (data, H, lengths,
    threshold); the paths written."""
    from matplotlib.figure import Figure

    names = list(dict.fromkeys(s["name"] for s in summary))
    paths = []
    for key, ci, x, fname in (("val_bpb", "bpb_ci", "train_flops", "bpb_vs_flops.png"),
                              ("diff_vs_bpe", "diff_ci", "budget", "gap_vs_budget.png")):
        fig = Figure(figsize=(7, 4.5))
        ax = fig.add_subplot()
        for k, name in enumerate(names):
            pts = sorted((s for s in summary if s["name"] == name and s[key] is not None),
                         key=lambda s: s["budget"])
            if pts:
                ys = np.array([s[key] for s in pts])
                err = np.abs(np.array([s[ci] for s in pts]).T - ys)
                ax.errorbar([s[x] for s in pts], ys, yerr=err, marker="o", capsize=3, label=name,
                            color=f"C{k}")
        ax.set_xscale("log")
        if key == "val_bpb":
            ax.set(xlabel="training FLOPs per run", ylabel="held-out bits per byte",
                   title="Held-out BPB against training compute (95% CI)")
        else:
            ax.set(xlabel="training budget (FLOPs)", ylabel="BPB minus BPE's (bits per byte)",
                   title="Gap to the BPE baseline (paired 95% CI; below 0: better than BPE)")
            ax.axhline(0, color="k", lw=0.8)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a study with no paired runs has no gap series
            ax.legend(fontsize=8)
        paths.append(save_figure(fig, os.path.join(out_dir, fname)))
    if lengths:
        fig = Figure(figsize=(3.2 * len(lengths), 3))
        for k, (name, doc_lengths) in enumerate(lengths.items()):
            ax = fig.add_subplot(1, len(lengths), k + 1)
            sizes = np.concatenate(doc_lengths)
            ax.hist(sizes, bins=np.arange(1, min(int(sizes.max()), 40) + 2) - 0.5, color=f"C{k}")
            ax.set_title(f"{name}\nmean {sizes.mean():.2f}", fontsize=9)
            ax.set_xlabel("patch size (bytes)")
        paths.append(save_figure(fig, os.path.join(out_dir, "patch_sizes.png")))
    if paragraph is not None:
        paths.append(os.path.join(out_dir, "entropy_patches.png"))
        plot_entropies(*paragraph, paths[-1], title="held-out paragraph: entropy and patches")
    return paths


def plot_domains(cells: dict, names: list[str], path: str):
    """Held-out BPB and the gap to BPE per run (cells: domain -> run name -> its summary), one colour per
    domain, with 95% intervals."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.0, 1.1 * len(names) + 2), 6.5))
    for row, (key, ci, label) in enumerate((("val_bpb", "bpb_ci", "held-out bits per byte"),
                                            ("diff_vs_bpe", "diff_ci", "minus BPE (bits per byte)"))):
        ax = fig.add_subplot(2, 1, row + 1)
        for k, (d, c) in enumerate(cells.items()):
            pts = [(j, c[n]) for j, n in enumerate(names) if n in c and c[n][key] is not None]
            if pts:
                xs = [j + (k - (len(cells) - 1) / 2) * 0.8 / len(cells) for j, _ in pts]
                ys = np.array([v[key] for _, v in pts])
                err = np.abs(np.array([v[ci] for _, v in pts]).T - ys)
                ax.errorbar(xs, ys, yerr=err, fmt="o", capsize=3, color=f"C{k}", label=d)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, fontsize=8)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if row:
            ax.axhline(0, color="k", lw=0.8)
        ax.legend(fontsize=8)
    save_figure(fig, path)


def save_figure(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def num(v, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def boundary_markdown(boundary: dict, reference) -> list[str]:
    """boundary_quality of each run (run name -> its figures) as a markdown section; reference: the byte
    model enrichment was measured under (None: none)."""
    if not boundary:
        return []
    lines = ["", "## Boundary quality (held-out documents)", "",
             f"Enrichment: mean surprisal of patch-start bytes over that of the other bytes, under "
             f"{reference or 'no reference model (no entropy model in this study)'}; a document's first "
             "byte is left out. Word boundaries: starts that cut no word (chance: the share of all bytes).",
             "",
             "| run | mean patch | median | CV | starts on word boundaries (chance) | enrichment |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, b in boundary.items():
        lines.append(f"| {name} | {b['mean_patch_size']:.2f} | {b['median_patch_size']:.1f} | "
                     f"{b['patch_size_cv']:.2f} | {num(b['word_boundary_fraction'])} "
                     f"({num(b['word_boundary_base_rate'])}) | {num(b['boundary_enrichment'])} |")
    return lines
