"""Numbers, tables and plots for the reports.
"""

from __future__ import annotations



def fmt_int(n: float | None) -> str:
    return "-" if n is None else f"{n:,.0f}"


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f} ms"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f}"


def render_rows(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def render_table(rows: list[list[str]], left: tuple[int, ...] = (0, -1)) -> str:
    """Columns aligned under a header and a rule: those in ``left`` (negative
    counts from the end) to the left, the others to the right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    left = {col % len(widths) for col in left}
    lines = []
    for index, row in enumerate(rows):
        cells = [cell.ljust(width) if col in left else cell.rjust(width)
                 for col, (cell, width) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def progress_line(summary: dict, sample: dict, target: int) -> str:
    est = summary["established_now"]
    frac = min(1.0, est / target) if target else 0.0
    bar = "#" * int(frac * 30) + "." * (30 - int(frac * 30))
    parts = [f"[{bar}] {est:,}/{target:,}", f"{summary['phase']}", f"err {summary['errors']:,}",
             f"resp/s {summary['responses_per_s']:,.0f}"]
    if "server_cpu" in sample:
        parts.append(f"server CPU {sample['server_cpu']:.0f}% RSS {fmt_bytes(sample['server_rss'])}")
    if "mem_used" in sample:
        parts.append(f"mem {sample['mem_used']:.0f}%")
    return " | ".join(parts)


def plot(path: str, samples: list[dict], title: str) -> str | None:
    """A PNG: connections and responses/s, memory, CPU over time. Returns an
    error text when it cannot be drawn (matplotlib missing)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'prefork[bench]'): no plot"
    t = [s["t"] for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    ax = axes[0]
    ax.plot(t, [s["established"] for s in samples], label="connections open")
    ax.set_ylabel("connections")
    ax2 = ax.twinx()
    ax2.plot(t, [s["responses_per_s"] for s in samples], color="tab:orange", label="responses/s")
    ax2.set_ylabel("responses/s")
    ax.legend(loc="upper left")
    ax2.legend(loc="lower right")
    ax.set_title(title)
    ax = axes[1]
    if any("server_rss" in s for s in samples):
        ax.plot(t, [s.get("server_rss", 0) / 2**30 for s in samples], label="server RSS (GiB)")
        ax.plot(t, [s.get("server_pss", 0) / 2**30 for s in samples], label="server PSS (GiB)")
    ax.plot(t, [s.get("mem_used_bytes", 0) / 2**30 for s in samples], label="machine memory used (GiB)")
    ax.set_ylabel("GiB")
    ax.legend(loc="upper left")
    ax = axes[2]
    for key, label in (("server_cpu", "server"), ("client_cpu", "client"), ("machine_cpu", "machine")):
        if any(key in s for s in samples):
            ax.plot(t, [s.get(key, 0) for s in samples], label=f"{label} CPU")
    ax.set_ylabel("% of all CPUs")
    ax.set_xlabel("seconds")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None
