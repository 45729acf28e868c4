"""The final table (a column per server turn), the JSON and the PNG."""

from __future__ import annotations

import json
from pathlib import Path

from ..report import fmt_bytes, fmt_int, render_table
from .servers import CROSSES_WORKERS


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:,.1f} ms"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}%"


ROWS = [
    ("workers", lambda r: str(r["workers"])),
    ("clients held (target)", lambda r: f"{fmt_int(r['established'] - r['dropped'])} ({fmt_int(r['clients'])})"),
    ("client processes / sources", lambda r: f"{r['client_processes']} / {r['source_addresses']}"),
    ("connect rate", lambda r: "-" if r["connect_rate"] is None else f"{r['connect_rate']:,.0f}/s"),
    ("connect p50 / p99", lambda r: f"{_ms(r['connect_p50_s'])} / {_ms(r['connect_p99_s'])}"),
    ("messages published", lambda r: str(r["messages"])),
    ("fan-out p50 / max", lambda r: f"{_ms(r['fanout_p50_s'])} / {_ms(r['fanout_max_s'])}"),
    ("deliveries/s while fanning out", lambda r: fmt_int(r["delivered_per_s"])),
    ("delivered / expected", lambda r: f"{fmt_int(r['delivered'])} / {fmt_int(r['expected'])}"),
    ("lost", lambda r: fmt_int(r["lost"])),
    ("duplicates / out of order", lambda r: fmt_int(r["duplicates"] + r["extra"])),
    ("errors", lambda r: fmt_int(sum(r["errors"].values()) + r["failed"] + len(r["fatal"]))),
    ("server CPU idle / publishing", lambda r: f"{_pct(r['server_cpu_idle'])} / {_pct(r['server_cpu_publish'])}"),
    ("server CPU per delivery", lambda r: "-" if r["server_cpu_us_per_delivery"] is None
     else f"{r['server_cpu_us_per_delivery']:.1f} µs"),
    ("server RSS / PSS peak", lambda r: f"{fmt_bytes(r['server_rss_peak'])} / {fmt_bytes(r['server_pss_peak'])}"),
    ("client CPU publishing", lambda r: _pct(r.get("client_cpu_publish"))),
    ("server memory per connection", lambda r: "-" if not r["server_bytes_per_connection"] else
     f"{r['server_bytes_per_connection']['rss']:,.0f} B RSS, {r['server_bytes_per_connection']['pss']:,.0f} B PSS"),
    ("machine memory used, peak", lambda r: _pct(r["mem_used_peak_percent"])),
]


def render(results: list[dict], settings: dict) -> str:
    ok = [r for r in results if "failure" not in r]
    lines = []
    if ok:
        header = ["", *(f"{r['server']}" for r in ok)]
        table = [header] + [[name, *(cell(r) for r in ok)] for name, cell in ROWS]
        lines.append(render_table(table, left=(0,)))
    for r in results:
        if "failure" in r:
            lines.append(f"{r['server']}: FAILED: {r['failure']}")
        elif r["errors"]:
            lines.append(f"{r['server']} errors: " + ", ".join(f"{k} {v:,}" for k, v in sorted(r["errors"].items())))
        if r.get("fatal"):
            lines.append(f"{r['server']} client failures: " + "; ".join(r["fatal"]))
    lines.append("")
    lines.append(f"{settings['clients']:,} clients on /ws/{settings['channel']}, {settings['messages']} messages of "
                 f"{settings['size']} B every {settings['every']:g} s, published by "
                 + ("a WebSocket client of the channel" if settings["publish"] == "ws"
                    else "POST /publish/<channel>") + f"; pinning: {settings['pinning']}")
    lines.append("broadcast across workers: " + "; ".join(
        f"{name}: {CROSSES_WORKERS[name]}" for name in dict.fromkeys(r["server"] for r in results)))
    if any(r.get("workers", 1) > 1 and r.get("lost") for r in ok):
        lines.append("with several workers, lost messages are those that never reached the other workers' "
                     "subscribers (no cross-worker broadcast)")
    return "\n".join(lines)


def write_json(path: str, results: list[dict], settings: dict) -> None:
    Path(path).write_text(json.dumps({"settings": settings, "results": results}, indent=2) + "\n")


def plot(path: str, results: list[dict], title: str) -> str | None:
    """Fan-out per message, subscribers open over time, server CPU over time:
    a line per server turn. An error text when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'prefork[bench]'): no plot"
    ok = [r for r in results if "failure" not in r]
    fig, axes = plt.subplots(3, 1, figsize=(9, 10))
    for r in ok:
        label = f"{r['server']} ({r['workers']}w)"
        rows = r["per_message"]
        axes[0].plot([m["seq"] for m in rows], [(m["fanout_s"] or 0) * 1000 for m in rows], marker="o", label=label)
        t = [s["t"] for s in r["samples"]]
        axes[1].plot(t, [s.get("open", 0) for s in r["samples"]], label=label)
        axes[2].plot(t, [s.get("server_cpu", 0) for s in r["samples"]], label=label)
    axes[0].set_title(title)
    axes[0].set_xlabel("message")
    axes[0].set_ylabel("fan-out (ms): publish -> last client")
    axes[1].set_ylabel("subscribers open")
    axes[2].set_ylabel("server CPU (% of machine)")
    axes[2].set_xlabel("seconds")
    axes[2].set_ylim(0, 100)
    for ax in axes:
        ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None
