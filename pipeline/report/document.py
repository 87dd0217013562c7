"""A report as a list of plain blocks, rendered to Markdown (images linked) or to one
self-contained HTML page (images inlined as data URIs, styles inline, nothing fetched)."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    path: Path
    alt: str


@dataclass
class Code:
    text: str


# Cells shown right-aligned: numbers, optionally signed or with a unit, and the dash of "none".
_NUMBER = re.compile(r"[+-]?\d[\d.,]*( s| %)?|—")

Block = Heading | Paragraph | Table | Image | Code

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 960px;
       margin: 2em auto; padding: 0 1em; color: #1f2328; line-height: 1.45; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .8em 0; }
th, td { border: 1px solid #d0d7de; padding: .35em .8em; }
th { background: #f6f8fa; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; display: block; margin: .8em 0; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; font-size: 85%; }
"""


def to_markdown(title: str, blocks: list[Block], relative_to: Path) -> str:
    """GitHub-flavoured Markdown; images are linked relative to ``relative_to``."""
    parts = [f"# {title}"]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Table):
            parts.append(markdown_table(block))
        elif isinstance(block, Image):
            parts.append(f"![{block.alt}]({block.path.relative_to(relative_to).as_posix()})")
        else:
            parts.append(f"```yaml\n{block.text.rstrip()}\n```")
    return "\n\n".join(parts) + "\n"


def markdown_table(table: Table) -> str:
    """A Markdown table, columns padded so that it also reads well in a terminal."""
    cells = [table.header, *table.rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(table.header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def to_html(title: str, blocks: list[Block]) -> str:
    """One HTML page that needs no other file: images inlined as base64 PNG data URIs."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Table):
            body.append(_html_table(block))
        elif isinstance(block, Image):
            data = base64.b64encode(block.path.read_bytes()).decode("ascii")
            alt = html.escape(block.alt, quote=True)
            body.append(f'<img alt="{alt}" src="data:image/png;base64,{data}">')
        else:
            body.append(f"<pre><code>{html.escape(block.text.rstrip())}</code></pre>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in table.header)
    rows = []
    for row in table.rows:
        cells = [
            f'<td class="num">{html.escape(cell)}</td>'
            if _NUMBER.fullmatch(cell)
            else f"<td>{html.escape(cell)}</td>"
            for cell in row
        ]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n"
        + "\n".join(rows)
        + "\n</tbody>\n</table>"
    )
