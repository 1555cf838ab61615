"""HTML building blocks shared by the report pages: the style sheet, the page frame, tables, figures and
number formatting. Cells and captions come in as plain text or already-escaped HTML, as each function says."""

from __future__ import annotations

import base64
from html import escape

from rlhfkit.atomic import write_text
from rlhfkit.report import plots
from rlhfkit.report.checks import finite, finite_pair

CSS = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; margin-top: 1.8em; }
.meta { color: #777; font-size: 0.9em; } .headline { font-size: 1.25em; font-weight: 600; margin: 0.8em 0; }
.warn { background: #fff4e5; border: 2px solid #e69500; border-radius: 6px; padding: 0.6em 1em; }
.ok { background: #eef8ee; border: 1px solid #7bb87b; border-radius: 6px; padding: 0.6em 1em; }
.note { color: #555; background: #f5f5f5; border-radius: 6px; padding: 0.5em 1em; }
table { border-collapse: collapse; margin: 0.8em 0; } td, th { border: 1px solid #ccc; padding: 4px 8px; }
th { background: #f0f0f0; text-align: left; } td.num { text-align: right; white-space: nowrap; }
.samples td { vertical-align: top; white-space: pre-wrap; max-width: 340px; font-size: 0.9em; }
.score { color: #555; font-size: 0.85em; margin-top: 0.4em; }
figure { display: inline-block; margin: 0.5em 1em 1em 0; max-width: 100%; }
img { max-width: 100%; } figcaption { color: #555; font-size: 0.88em; max-width: 600px; }
"""

# how each method is named in sentences, captions and legends
METHOD_LABELS = {"ppo": "PPO", "dpo": "DPO", "grpo": "GRPO", "rloo": "RLOO", "reinforce_pp": "REINFORCE++",
                 "bon": "best-of-n", "sft": "SFT"}


def method_label(name: str) -> str:
    return METHOD_LABELS.get(name, name)


def num(value, spec: str = ".3f") -> str:
    """A finite number formatted with `spec`, else an em dash."""
    v = finite(value)
    return "—" if v is None else format(v, spec)


def ci(value, spec: str = ".3f") -> str:
    """A [low, high] interval as text, else ""."""
    pair = finite_pair(value)
    return f"[{pair[0]:{spec}}, {pair[1]:{spec}}]" if pair else ""


def duration(seconds) -> str:
    s = finite(seconds)
    if s is None:
        return "—"
    if s < 60:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {s % 60:02.0f} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def table(header: list[str], rows: list[list[str]], *, numeric: tuple[int, ...] = (), cls: str = "") -> str:
    """An HTML table of already-escaped cells (plain-text header); the `numeric` columns are right-aligned."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


def figure(fig, caption: str) -> str:
    """A matplotlib figure as an inline base64 PNG with its plain-text caption (closes the figure)."""
    data = base64.b64encode(plots.figure_png(fig)).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(caption)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def write_page(path, title: str, sections: list[str]) -> None:
    """A self-contained page (inline CSS, no JS) of the non-empty `sections` (HTML) titled `title` (text)."""
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head>\n"
            "<body>\n" + "\n".join(s for s in sections if s) + "\n</body></html>\n")
    # character references keep the page pure ASCII, so write_text works under any locale encoding
    write_text(path, page.encode("ascii", "xmlcharrefreplace").decode("ascii"))
