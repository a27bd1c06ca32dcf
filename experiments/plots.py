"""Line plots as plain SVG: curves of a value per epoch, one colour per series.

The results scripts draw few, small plots; a dependency-free writer keeps
the project's install to what the library itself needs.
"""

import html
import pathlib

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
            "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
_WIDTH, _HEIGHT = 800, 400
_LEFT, _RIGHT, _TOP, _BOTTOM = 60, 390, 40, 50


def line_plot(series: dict[str, list[list[float]]], title: str, ylabel: str,
              path, y_range: tuple[float, float] | None = None) -> None:
  """Writes an SVG with, for each series name, one line per run (its epochs
  1..n on x). Runs of one series share its colour."""
  values = [v for runs in series.values() for run in runs for v in run]
  if not values:
    raise ValueError("line_plot needs at least one value")
  low, high = y_range or (min(values), max(values))
  high = high if high > low else low + 1.0
  epochs = max(len(run) for runs in series.values() for run in runs)
  plot_w = _WIDTH - _LEFT - _RIGHT
  plot_h = _HEIGHT - _TOP - _BOTTOM

  def x_of(epoch: int) -> float:
    return _LEFT + plot_w * (epoch - 1) / max(epochs - 1, 1)

  def y_of(value: float) -> float:
    clipped = min(max(value, low), high)
    return _TOP + plot_h * (1 - (clipped - low) / (high - low))

  parts = [
      f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}"'
      f' height="{_HEIGHT}" font-family="sans-serif" font-size="12">',
      f'<rect width="{_WIDTH}" height="{_HEIGHT}" fill="white"/>',
      f'<text x="{_WIDTH / 2}" y="20" text-anchor="middle"'
      f' font-size="14">{html.escape(title)}</text>',
      f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}"'
      ' fill="none" stroke="black"/>',
  ]
  for i in range(5):
    value = low + (high - low) * i / 4
    y = y_of(value)
    parts.append(f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y:.1f}"'
                 f' y2="{y:.1f}" stroke="#ddd"/>')
    parts.append(f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                 f'{value:.3g}</text>')
  for epoch in sorted({1, epochs, *range(10, epochs, 10)}):
    parts.append(f'<text x="{x_of(epoch):.1f}" y="{_TOP + plot_h + 18}"'
                 f' text-anchor="middle">{epoch}</text>')
  parts.append(f'<text x="{_LEFT + plot_w / 2}" y="{_HEIGHT - 10}"'
               ' text-anchor="middle">epoch</text>')
  parts.append(f'<text x="15" y="{_TOP + plot_h / 2}" text-anchor="middle"'
               f' transform="rotate(-90 15 {_TOP + plot_h / 2})">'
               f'{html.escape(ylabel)}</text>')
  for k, (name, runs) in enumerate(series.items()):
    colour = _COLOURS[k % len(_COLOURS)]
    for run in runs:
      points = " ".join(f"{x_of(e + 1):.1f},{y_of(v):.1f}"
                        for e, v in enumerate(run))
      parts.append(f'<polyline points="{points}" fill="none"'
                   f' stroke="{colour}" stroke-width="1.5" opacity="0.8"/>')
    y = _TOP + 16 * k + 8
    x = _LEFT + plot_w + 12
    parts.append(f'<line x1="{x}" x2="{x + 20}" y1="{y}" y2="{y}"'
                 f' stroke="{colour}" stroke-width="2"/>')
    parts.append(f'<text x="{x + 26}" y="{y + 4}">{html.escape(name)}</text>')
  parts.append("</svg>")
  pathlib.Path(path).write_text("\n".join(parts) + "\n")
