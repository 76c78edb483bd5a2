"""How long a burst takes to drain through the 5-minute pipeline: a step-by-step model of the sensor loop.

The scaling model's §6.2 drain (``backlog / (processing - steady)``) treats processing as a
continuous flow. The pipeline does not work that way, and at this project's throughput the
difference is the whole answer:

- a window can only be processed once it is complete: its end has passed, plus the delay before the
  sensor sees it complete (``pipeline.grace_seconds``, the ingest heartbeat and batching);
- the sensor looks every tick; a run takes a fixed cost (run start, steps, checks) plus its flows
  over the pipeline's measured throughput; one run at a time, windows in order;
- a tick takes at most ``pipeline.max_runs_per_tick`` complete windows, or, once lag is above
  ``pause_at_lag_seconds`` (catch-up), up to ``catch_up_windows_per_run`` as one run, until lag is
  back below ``max_acceptable_lag_seconds``;
- lag is the sensor's: newest landed receive time minus the end of the newest processed window.

:func:`predict_drain` steps through exactly that, on the window clock, and returns the drain as
``flowlens bench burst`` measures it: from the burst's end until the window holding the burst's
end has been processed and lag is at or below ``max_acceptable_lag_seconds``. (Lag measured before
that window is complete says nothing about the burst: between windows lag is low by construction.)

Pure: every figure is passed in; :func:`pipeline_from` builds them from the config and this
machine's bench files.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ingest.config import FlowLensConfig

WINDOW_SECONDS = 300.0
# Fixed cost of one window run when no `flowlens bench burst` measured it here (a Dagster run in
# process with its asset checks, measured on the 2-core development machine).
DEFAULT_RUN_OVERHEAD_SECONDS = 10.0


@dataclass(frozen=True)
class Pipeline:
    """How the pipeline processes windows; every time on the window clock (seconds)."""

    flows_per_s: float  # throughput of the per-flow stages (read, enrich, lake, aggregate)
    run_overhead_s: float  # fixed cost of a run, whatever its size
    tick_s: float  # from the end of a tick's work to the next tick
    close_delay_s: float  # from a window's end until the sensor sees it complete
    windows_per_run: int = 12  # pipeline.max_runs_per_tick
    catch_up_windows_per_run: int = 36  # pipeline.catch_up_windows_per_run
    pause_at_lag_s: float = 600.0
    max_acceptable_lag_s: float = 300.0
    window_s: float = WINDOW_SECONDS
    rows_per_s: float = math.inf  # throughput of the per-connection stages (flow_stats, assets, dependencies, changes)

    def run_seconds(self, flows: float, rows: float = 0.0) -> float:
        return self.run_overhead_s + flows / self.flows_per_s + rows / self.rows_per_s


@dataclass(frozen=True)
class Shape:
    """Traffic as consecutive (flows/s, seconds) segments from a window start; ``burst`` indexes the burst."""

    segments: tuple[tuple[float, float], ...]
    burst: int
    rows: Callable[[float], float] = lambda flows: 0.0  # distinct connections in a window of that many flows

    @property
    def burst_end(self) -> float:
        return sum(seconds for _, seconds in self.segments[: self.burst + 1])

    @property
    def end(self) -> float:
        return sum(seconds for _, seconds in self.segments)

    def flows_between(self, a: float, b: float) -> float:
        """Flows received in [a, b) (the last segment's rate goes on after the shape ends)."""
        total, start = 0.0, 0.0
        for index, (rate, seconds) in enumerate(self.segments):
            stop = math.inf if index == len(self.segments) - 1 else start + seconds
            total += rate * max(0.0, min(b, stop) - max(a, start))
            start += seconds
        return total


def burst_shape(steady: float, peak: float, seconds: float, lead_s: float = WINDOW_SECONDS) -> Shape:
    """Steady traffic for ``lead_s``, the burst, then steady again (the planner's shape: burst from a window start)."""
    return Shape(((steady, lead_s), (peak, seconds), (steady, WINDOW_SECONDS)), burst=1)


@dataclass
class Prediction:
    drain_seconds: float | None  # None: not drained within the horizon
    max_lag_s: float
    runs: list[dict[str, Any]] = field(default_factory=list)  # start, seconds, windows, flows, catch_up

    def as_dict(self) -> dict[str, Any]:
        return {
            "drain_seconds": None if self.drain_seconds is None else round(self.drain_seconds, 1),
            "max_lag_seconds": round(self.max_lag_s, 1),
            "runs": len(self.runs),
            "catch_up_runs": sum(r["catch_up"] for r in self.runs),
            "run_seconds": round(sum(r["seconds"] for r in self.runs), 1),
        }


def predict_drain(shape: Shape, p: Pipeline, horizon_windows: int = 2_000) -> Prediction:
    """Step through the sensor loop (tick, run, measure lag, wait) until the burst has drained."""
    t, processed, held, max_lag = 0.0, 0.0, False, 0.0
    burst_end = shape.burst_end
    burst_window_end = math.ceil(burst_end / p.window_s) * p.window_s  # the window holding the burst's end
    runs: list[dict[str, Any]] = []
    while t < burst_window_end + horizon_windows * p.window_s:
        lag = max(0.0, t - processed)  # flows keep landing: the newest receive time is now
        held = lag > p.pause_at_lag_s or (held and lag >= p.max_acceptable_lag_s)
        cap = p.catch_up_windows_per_run if held else p.windows_per_run
        complete = int((t - p.close_delay_s - processed) // p.window_s)
        windows = min(cap, max(0, complete))
        if windows:
            end = processed + windows * p.window_s
            flows = shape.flows_between(processed, end)
            rows = sum(shape.rows(shape.flows_between(w, w + p.window_s)) for w in _starts(processed, end, p.window_s))
            seconds = p.run_seconds(flows, rows)
            runs.append({"start": t, "seconds": seconds, "windows": windows, "flows": flows, "catch_up": held})
            max_lag = max(max_lag, t + seconds - processed)  # lag grows while the run works
            t, processed = t + seconds, end
        lag = t - processed
        max_lag = max(max_lag, lag)
        if processed >= burst_window_end and lag <= p.max_acceptable_lag_s:
            return Prediction(max(0.0, t - burst_end), max_lag, runs)
        t += p.tick_s
    return Prediction(None, max_lag, runs)


def _starts(first: float, end: float, step: float) -> list[float]:
    return [first + i * step for i in range(round((end - first) / step))]


# The pipeline bench's stages (``flowlens bench pipeline``), by what their cost follows.
FLOW_STAGES = ("read_seconds", "enrich_seconds", "write_lake_seconds", "aggregate_seconds")
ROW_STAGES = ("write_pg_seconds", "assets_seconds", "dependencies_seconds", "changes_seconds")
FLOW_CHECKS = ("landing_suite", "enriched_suite", "lake_matches_load", "landing_matches_load")


def speeds_from(results: dict[str, dict[str, Any]]) -> tuple[float, float, str] | None:
    """Flows/s of the per-flow stages and flow_stats rows/s of the per-connection stages, checks
    included, from this machine's ``bench pipeline`` file; None without one (or without stages)."""
    bench = results.get("pipeline", {})
    f, checks = bench.get("figures", {}), bench.get("config", {}).get("per_check_seconds") or {}
    if not f.get("flows") or not f.get("flow_stats_rows") or any(f.get(k) is None for k in FLOW_STAGES + ROW_STAGES):
        return None
    flow_s = sum(f[k] for k in FLOW_STAGES) + sum(v for k, v in checks.items() if k in FLOW_CHECKS)
    row_s = sum(f[k] for k in ROW_STAGES) + sum(v for k, v in checks.items() if k not in FLOW_CHECKS)
    source = (
        f"measured: {bench.get('_path', 'bench/pipeline.json')} stages and checks "
        f"({f['flows']:,} flows, {f['flow_stats_rows']:,} rows)"
    )
    return f["flows"] / flow_s, f["flow_stats_rows"] / row_s, source


def pipeline_from(
    cfg: FlowLensConfig,
    flows_per_s: float,
    run_overhead_s: float,
    tick_s: float | None = None,
    close_delay_s: float | None = None,
    rows_per_s: float = math.inf,
) -> Pipeline:
    """The pipeline as ``cfg`` configures it (tick, grace, caps, lag bounds), with measured speeds.

    ``tick_s`` defaults to the sensor interval; ``close_delay_s`` to the grace period plus what the
    ingest side adds before a window's watermark is published (a batch's linger, half a heartbeat).
    """
    pipe, ing, bp = cfg.pipeline, cfg.ingest, cfg.backpressure.kafka
    if close_delay_s is None:
        close_delay_s = pipe.grace_seconds + ing.batch_max_seconds + ing.heartbeat_seconds / 2
    return Pipeline(
        flows_per_s=flows_per_s,
        rows_per_s=rows_per_s,
        run_overhead_s=run_overhead_s,
        tick_s=float(pipe.sensor_interval_seconds if tick_s is None else tick_s),
        close_delay_s=close_delay_s,
        windows_per_run=pipe.max_runs_per_tick,
        catch_up_windows_per_run=pipe.catch_up_windows_per_run,
        pause_at_lag_s=float(bp.pause_at_lag_seconds),
        max_acceptable_lag_s=float(bp.max_acceptable_lag_seconds),
    )


def run_overhead_from(results: dict[str, dict[str, Any]]) -> tuple[float, str]:
    """A window run's fixed cost: measured by the last `flowlens bench burst` here, else the default."""
    burst = results.get("burst", {})
    value = burst.get("config", {}).get("run_overhead_seconds")
    if isinstance(value, int | float) and value > 0:
        return float(value), f"measured: {burst.get('_path', 'bench/burst.json')} config.run_overhead_seconds"
    return DEFAULT_RUN_OVERHEAD_SECONDS, "this project's default (no bench burst file)"
