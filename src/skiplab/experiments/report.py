"""``report.md`` (and ``report.html``) from the results files of a run folder.

The report opens with the table of claims (claim, experiment, measured, verdict, paper's
number), then the run's data, budget, seeds, device and time, then one section per experiment
with its figures. Everything is rebuilt from ``<run>/<experiment>/results.json``: figures are
redrawn, verdicts recomputed.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from matplotlib.figure import Figure as MplFigure

from skiplab.experiments.base import Experiment, Figure, load_results
from skiplab.experiments.verdict import Verdict


def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, **kwargs):
    """``plt.subplots`` without pyplot: a ``matplotlib.figure.Figure`` and its axes.

    The figure is not registered with pyplot, so skiplab never chooses or switches the
    process's plotting backend (a notebook keeps its inline backend); ``savefig`` renders it
    with the canvas of the file format.
    """
    fig = MplFigure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save_figure(fig, folder: Path, stem: str) -> None:
    """Save ``fig`` as ``stem.png`` and ``stem.svg`` in ``folder``."""
    fig.savefig(folder / f"{stem}.png", dpi=120, bbox_inches="tight")
    fig.savefig(folder / f"{stem}.svg", bbox_inches="tight")


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def build_report(run_dir: Path, experiments: list[Experiment]) -> Path:
    """Redraw figures, recompute verdicts and write ``report.md`` and ``report.html``.

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
        figs = "\n\n".join(
            f"![{_cell(f.caption)}]({exp.name}/{f.stem}.png)\n\n*{f.caption}*" for f in figures
        )
        sections.append(
            f"## {exp.title}\n\n*{exp.paper}* — experiment `{exp.name}`, "
            f"{record.seconds:.0f} s.\n\n{body}\n\n{figs}".rstrip()
        )
    if not records:
        raise FileNotFoundError(f"no experiment results found under {run_dir}")

    first = records[0]
    s, env = first.settings, first.environment
    total = sum(r.seconds for r in records)
    lines = [
        "# skiplab: reproducing the chapter on residual learning",
        "",
        "## Claims",
        "",
        "| claim | experiment | measured | verdict | margin (needed) | paper |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [_verdict_row(v) for v in all_verdicts]
    counts = {k: sum(v.status == k for v in all_verdicts) for k in _STATUSES}
    lines += [
        "",
        ", ".join(f"{n} {k}" for k, n in counts.items()) + f" of {len(all_verdicts)} claims.",
        "",
        "## Run",
        "",
        f"- data: `{s['data']}`" + (f" from `{s['data_dir']}`" if s.get("data_dir") else ""),
        f"- budget: `{s['budget']}`; seeds: {s['seeds']} (0..{s['seeds'] - 1})",
        f"- device: {env['device']}"
        + (f" ({env['cuda_device']})" if env.get("cuda_device") else "")
        + f", {env['cpu_count']} CPUs, {env['torch_threads']} torch threads",
        _precision_line(s, env),
        f"- software: Python {env['python']}, torch {env['torch']}, "
        f"torchvision {env['torchvision']}; git {env['git_revision']}",
        f"- time: {total:.0f} s over {len(records)} experiments",
    ]
    if missing:
        lines.append(f"- not run: {', '.join(missing)}")
    text = "\n".join(lines) + "\n\n" + "\n\n".join(sections) + "\n"
    path = run_dir / "report.md"
    path.write_text(text)
    (run_dir / "report.html").write_text(markdown_to_html(text))
    return path


_STATUSES = ("REPRODUCED", "NOT REPRODUCED", "INCONCLUSIVE")


def _precision_line(settings: dict, env: dict) -> str:
    """What the nets computed in, what was asked, and what the CPU does natively."""
    name = {"none": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}[settings["amp"]]
    asked = settings.get("amp_asked") or settings["amp"]
    layout = "channels_last" if settings.get("channels_last") else "contiguous"
    line = f"- precision: {name} (amp `{asked}`), {layout}"
    cpu = env.get("cpu")
    if cpu:  # results written before the CPU was recorded have no entry
        bf16 = "native bf16" if cpu["native_bf16"] else "no native bf16"
        line += f"; CPU {cpu['model']} ({cpu['capability']}, {bf16})"
    return line


def _verdict_row(v: Verdict) -> str:
    return (
        f"| {_cell(v.claim)} | {v.experiment} | {_cell(v.measured)} | **{v.status}** | "
        f"{v.margin:+.3g} ({v.needed:.3g}, n={v.n}) | {_cell(v.paper or '—')} |"
    )


def markdown_to_html(text: str) -> str:
    """A small converter for the subset the report uses: headings, tables, images, lists,
    emphasis and code. Images are referenced by relative path, so the HTML sits beside them."""
    out, table = [], []

    def inline(s: str) -> str:
        s = html.escape(s, quote=False)
        s = re.sub(
            r"!\[([^\]]*)\]\(([^)]+)\)", r'<img alt="\1" src="\2" style="max-width:720px">', s
        )
        s = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)
        s = re.sub(r"\*([^*]+)\*", r"<i>\1</i>", s)
        return re.sub(r"`([^`]+)`", r"<code>\1</code>", s)

    def flush_table():
        if table:
            rows = [r for r in table if not re.fullmatch(r"\|[\s\-|]+\|", r)]
            cells = [[c.strip() for c in re.split(r"(?<!\\)\|", r)[1:-1]] for r in rows]
            head = "".join(f"<th>{inline(c)}</th>" for c in cells[0])
            body = "".join(
                "<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in cells[1:]
            )
            out.append(f"<table><tr>{head}</tr>{body}</table>")
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        if m := re.match(r"(#+) (.*)", line):
            level = len(m.group(1))
            out.append(f"<h{level}>{inline(m.group(2))}</h{level}>")
        elif line.startswith("- "):
            out.append(f"<li>{inline(line[2:])}</li>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    flush_table()
    style = (
        "body{font-family:sans-serif;max-width:960px;margin:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
    )
    return f"<!doctype html><meta charset=utf-8><style>{style}</style>\n" + "\n".join(out)


__all__ = ["Figure", "build_report", "markdown_to_html", "save_figure", "subplots"]
