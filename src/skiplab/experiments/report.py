"""``report.md``, ``report.html`` and ``verdicts.json`` from the results files of a run folder.

The report opens with what its budget can and cannot show, the count of verdicts and the table
of claims (verdict, claim, measured numbers, mean margin with its 95% Student-t interval against
the minimum effect, seeds, guards, source), then the run (data, budget, seeds, precision, CPU,
versions, time), then one section per experiment: its deviations from the paper, its claims
with each minimum effect justified and every seed's margin, its tables and figures. Everything
is rebuilt from ``<run>/<experiment>/results.json``: figures are redrawn, verdicts recomputed.

The HTML is rendered by markdown-it-py (CommonMark with tables, raw HTML off), so text that the
report embeds (paths, run names, class names) cannot become markup.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from statistics import mean, stdev

from markdown_it import MarkdownIt
from matplotlib.figure import Figure as MplFigure

from skiplab.experiments.base import Experiment, Figure, load_results
from skiplab.experiments.verdict import (
    INCONCLUSIVE,
    MIN_SEEDS,
    NOT_REPRODUCED,
    REPRODUCED,
    STATUSES,
    Verdict,
)
from skiplab.fileio import atomic_write
from skiplab.hardware import precision_name


def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, **kwargs):
    """``plt.subplots`` without pyplot: a ``matplotlib.figure.Figure`` and its axes.

    The figure is not registered with pyplot, so skiplab never chooses or switches the
    process's plotting backend (a notebook keeps its inline backend); ``savefig`` renders it
    with the canvas of the file format.
    """
    fig = MplFigure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def plot_mean_range(
    ax,
    xs,
    per_x: list[list[float]],
    color,
    label: str,
    style: str = "-o",
    alpha: float = 0.15,
    **line,
) -> None:
    """The spread over seeds in a figure: the mean of each ``per_x`` entry (the values of every
    seed at that x) as a line, their range as a band (drawn only with two or more seeds)."""
    ax.plot(xs, [mean(v) for v in per_x], style, color=color, label=label, **line)
    if min(len(v) for v in per_x) > 1:
        ax.fill_between(
            xs, [min(v) for v in per_x], [max(v) for v in per_x], color=color, alpha=alpha, lw=0
        )


def save_figure(fig, folder: Path, stem: str) -> None:
    """Save ``fig`` as ``stem.png`` and ``stem.svg`` in ``folder``."""
    fig.savefig(folder / f"{stem}.png", dpi=120, bbox_inches="tight")
    fig.savefig(folder / f"{stem}.svg", bbox_inches="tight")


# Markdown punctuation that could turn embedded text into markup (emphasis, links, images, code,
# table cells); each is shown literally when backslash-escaped. Raw HTML needs no escape: the
# renderer runs with HTML off, so "<script>" is text.
_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_\[\]|!])")

# What each budget's verdicts can and cannot show, printed at the top of the report.
_BUDGET_STATEMENTS = {
    "quick": (
        "**What this report can show.** This is the *quick* budget: synthetic images, small or "
        "shrunk nets and schedules of minutes on a CPU. It shows that the machinery runs end to "
        "end and the direction each effect takes at this size. It is not evidence for or "
        "against the papers: the nets are far from the papers' sizes, data and schedules, and "
        f"a trained claim measured on fewer than {MIN_SEEDS} seeds is never decided (it is "
        "INCONCLUSIVE, with the measured direction shown). For evidence, run the *standard* "
        "budget on CIFAR-10 / ISBI 2012 with three or more seeds."
    ),
    "standard": (
        "**What this report can show.** This is the *standard* budget: real data at the sizes "
        "and schedules that fit about 90 minutes per experiment on two CPU cores (three "
        "seeds), so shorter than the papers' (every deviation is listed in its experiment's "
        "section). A verdict is "
        "decided only from three or more seeds, by the 95% Student-t interval of the mean "
        "margin, and only when every net it rests on passed its guard."
    ),
    "paper": (
        "**What this report can show.** This is the *paper* budget: the papers' schedules, "
        "with the deviations listed in each experiment's section. A verdict is decided only from "
        "three or more seeds, by the 95% Student-t interval of the mean margin, and only when "
        "every net it rests on passed its guard."
    ),
}


def md_text(text) -> str:
    """``text`` as literal Markdown: punctuation escaped, one line (safe in a table cell)."""
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", str(text)).replace("\n", " ")


def mean_sd(values: list[float], spec: str = ".3g", unit: str = "", *, each: bool = False) -> str:
    """A table cell for the numbers of several seeds: ``"mean ± sd<unit>"``, the sample standard
    deviation (n - 1), each number formatted with ``spec``.

    One value is shown alone (``"<value><unit>"``); no value is ``"—"``. ``each`` appends every
    value in brackets (``"1.0 ± 0.1% (0.9, 1.1)"``). Values are not filtered: a lone NaN shows
    as ``nan``, and among several values a NaN or infinity goes to :func:`statistics.stdev` as
    it is (which raises on Python 3.11).
    """
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:{spec}}{unit}"
    text = f"{mean(values):{spec}} ± {stdev(values):{spec}}{unit}"
    if each:
        text += " (" + ", ".join(f"{v:{spec}}" for v in values) + ")"
    return text


def build_report(run_dir: Path, experiments: list[Experiment]) -> Path:
    """Redraw figures, recompute verdicts and write ``report.md``, ``report.html`` and
    ``verdicts.json`` (every verdict as data).

    Experiments without a results file in ``run_dir`` are listed as not run.

    Returns:
        The path of ``report.md``.
    """
    run_dir = Path(run_dir)
    sections, all_verdicts, missing, records = [], [], [], []
    for exp in experiments:
        folder = run_dir / exp.name
        if not (folder / "results.json").is_file():
            missing.append(exp.name)
            continue
        record = load_results(folder)
        records.append(record)
        figures = exp.figures(record.results, folder)
        verdicts = exp.verdicts(record.results)
        all_verdicts += verdicts
        body = exp.section(record.results, figures, verdicts)
        deviations = _common_deviations(record.settings) + exp.deviations(record.results)
        parts = [
            f"## {md_text(exp.title)}",
            f"*{md_text(exp.paper)}* — experiment `{exp.name}`, {record.seconds:.0f} s.",
        ]
        if deviations:
            parts.append(
                "**Deviations from the paper.**\n\n" + "\n".join(f"- {d}" for d in deviations)
            )
        if verdicts:
            parts.append(_claims_detail(verdicts))
        parts.append(body)
        parts += [
            f"![{md_text(f.caption)}]({exp.name}/{f.stem}.png)\n\n*{md_text(f.caption)}*"
            for f in figures
        ]
        sections.append("\n\n".join(p for p in parts if p.strip()))
    if not records:
        raise FileNotFoundError(f"no experiment results found under {run_dir}")

    first = records[0]
    s, env = first.settings, first.environment
    total = sum(r.seconds for r in records)
    seeds = s["seeds"] if isinstance(s["seeds"], list) else list(range(s["seeds"]))
    counts = {k: sum(v.status == k for v in all_verdicts) for k in STATUSES}
    few = sum(v.status == INCONCLUSIVE and v.n < MIN_SEEDS and not v.exact for v in all_verdicts)
    guarded = sum(v.status == INCONCLUSIVE and "guard" in v.note for v in all_verdicts)
    lines = [
        "# skiplab: reproducing the chapter on residual learning",
        "",
        _BUDGET_STATEMENTS.get(s["budget"], ""),
        "",
        "## Summary",
        "",
        " · ".join(f"**{k}** {n}" for k, n in counts.items())
        + f" of {len(all_verdicts)} claims"
        + (
            f" (of the inconclusive: {few} measured on fewer than {MIN_SEEDS} seeds, {guarded} "
            "resting on a net that failed its guard)"
            if counts[INCONCLUSIVE]
            else ""
        )
        + f"; seeds: {len(seeds)}.",
        "",
        "A verdict is REPRODUCED when the 95% Student-t interval of the mean margin (positive: "
        "the claim holds) lies above the claim's minimum effect, NOT REPRODUCED when it lies "
        "below, INCONCLUSIVE otherwise; see each experiment's section for why each minimum "
        "effect has its value and every seed's margin.",
        "",
        "## Claims",
        "",
        "| verdict | claim | experiment | measured | mean margin [95% CI] | min effect | n | guard "
        "| source |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [_verdict_row(v) for v in all_verdicts]
    lines += [
        "",
        "## Run",
        "",
        f"- data: {md_text(s['data'])}"
        + (f" from {md_text(s['data_dir'])}" if s.get("data_dir") else ""),
        f"- budget: {md_text(s['budget'])}; seeds: {len(seeds)} "
        f"({', '.join(str(x) for x in seeds)})",
        f"- device: {env['device']}"
        + (f" ({md_text(env['cuda_device'])})" if env.get("cuda_device") else "")
        + f", {env['cpu_count']} CPUs, {env['torch_threads']} torch threads",
        _precision_line(s, env),
        f"- software: Python {env['python']}, torch {env['torch']}, "
        f"torchvision {env['torchvision']}; git {md_text(env['git_revision'])}",
        f"- time: {total:.0f} s over {len(records)} experiments",
    ]
    if missing:
        lines.append(f"- not run: {', '.join(missing)}")
    text = "\n".join(lines) + "\n\n" + "\n\n".join(sections) + "\n"
    path = run_dir / "report.md"
    atomic_write(path, text.encode())
    atomic_write(run_dir / "report.html", markdown_to_html(text).encode())
    data = [{**v.as_dict()} for v in all_verdicts]
    atomic_write(run_dir / "verdicts.json", (json.dumps(data, indent=2) + "\n").encode())
    return path


def _common_deviations(settings: dict) -> list[str]:
    """Deviations every experiment of a run shares: the data and the precision."""
    out = []
    if settings["data"] == "synthetic":
        out.append(
            "data: the embedded synthetic shapes-and-fills images (skiplab.data.synthetic) stand "
            "in for the papers' data sets"
        )
    if settings["amp"] != "none":
        out.append(f"precision: {settings['amp']} autocast (the papers trained in fp32)")
    if settings.get("channels_last"):
        out.append("memory format: channels_last (the same arithmetic in another layout)")
    return out


def _precision_line(settings: dict, env: dict) -> str:
    """What the nets computed in, what was asked, and what the CPU does natively."""
    asked = settings.get("amp_asked") or settings["amp"]
    layout = "channels_last" if settings.get("channels_last") else "contiguous"
    line = f"- precision: {precision_name(settings['amp'])} (amp {asked}), {layout}"
    cpu = env.get("cpu")
    if cpu:  # results written before the CPU was recorded have no entry
        bf16 = "native bf16" if cpu["native_bf16"] else "no native bf16"
        line += f"; CPU {md_text(cpu['model'])} ({cpu['capability']}, {bf16})"
    return line


def _interval(v: Verdict) -> str:
    if v.n == 0:
        return "—"
    if v.ci is None:
        return f"{v.margin:+.3g}"
    return f"{v.margin:+.3g} [{v.ci[0]:+.3g}, {v.ci[1]:+.3g}]"


def _verdict_row(v: Verdict) -> str:
    source = v.source + (f" ({v.paper})" if v.paper else "")
    return (
        f"| **{v.status}** | {md_text(v.claim)} | {v.experiment} | {_measured_cell(v)} | "
        f"{_interval(v)} | "
        f"{v.min_effect:g} | {v.n} | {md_text(v.guard_text)} | {md_text(source or '—')} |"
    )


def _measured_cell(v: Verdict) -> str:
    """The measured numbers, then (in italics) why the verdict is INCONCLUSIVE, if it is."""
    text = md_text(v.measured)
    if v.note and v.note != v.measured:
        text += f" *({md_text(v.note)})*"
    return text


def _claims_detail(verdicts: list[Verdict]) -> str:
    """Per experiment: each claim's minimum effect with its justification, and every margin."""
    rows = [
        "| claim | min effect | why that value | margins per seed |",
        "| --- | --- | --- | --- |",
    ]
    for v in verdicts:
        margins = ", ".join(f"{m:+.3g}" for m in v.values) or "—"
        rows.append(
            f"| {md_text(v.claim)} | {v.min_effect:g} | {md_text(v.why_min or '—')} | {margins} |"
        )
    return "\n".join(rows)


_STATUS_CLASS = {REPRODUCED: "ok", NOT_REPRODUCED: "no", INCONCLUSIVE: "open"}
_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
 line-height:1.45;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}
th{background:#f3f3f3}
tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;border:1px solid #eee}
code{background:#f3f3f3;padding:0 3px}
strong.v{display:inline-block;padding:2px 6px;border-radius:4px;color:#fff;white-space:nowrap}
strong.v.ok{background:#1a7f37}strong.v.no{background:#c0392b}strong.v.open{background:#9a6700}
"""


def markdown_to_html(text: str) -> str:
    """The report as a standalone HTML page (markdown-it-py: CommonMark + tables, raw HTML
    off, so embedded text is escaped); verdict words are coloured."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    body = md.render(text)
    for status, cls in _STATUS_CLASS.items():
        body = body.replace(
            f"<strong>{status}</strong>", f'<strong class="v {cls}">{status}</strong>'
        )
    title = "skiplab: reproducing the chapter on residual learning"
    return (
        f"<!doctype html>\n<html lang=en><head><meta charset=utf-8><title>{title}</title>"
        f"<style>{_STYLE}</style></head><body>\n{body}</body></html>\n"
    )


__all__ = [
    "Figure",
    "build_report",
    "markdown_to_html",
    "md_text",
    "mean_sd",
    "save_figure",
    "subplots",
]
