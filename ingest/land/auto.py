"""Auto mode's landing: PostgreSQL ``flow_raw`` or Kafka ``flows.raw``, switched on the measured rate.

:class:`AutoLanding` wraps a :class:`~ingest.land.postgres.PostgresLanding` (always open: it also
holds the watermarks and the switch records) and a :class:`~ingest.land.kafka.KafkaLanding`
(opened on the first switch up). :class:`~ingest.scaling.switch.ModeSwitcher` decides when to
switch from the flows written; a switch is taken only once the target answers (a probe in a
background thread), so a down landing is never switched to: the process stays, logs why and tries
again after ``PROBE_RETRY_SECONDS``. Under the daemon the decision is made once for all receiving
processes (:mod:`ingest.scaling.shared`): process 0 decides on the daemon-wide rate, the others
follow, so a switch is made, logged, counted, recorded and published once.

No flow is lost or counted twice: every batch goes to exactly one landing (a batch whose write
failed is retried on whichever landing is current then); writes already under way on the old
landing finish there. Heartbeats go to PostgreSQL and, once Kafka was used, to Kafka as well, so
either reader knows how far the instance has landed. A window therefore may hold flows in both
landings: :meth:`AutoLanding.read_window` reads both (Kafka whenever it answers) and returns their
union, with each part's position and the switches of the window (``flowlens.mode_switches``).

Each switch is logged, counted (``flowlens_mode_switches_total{from,to}``), recorded in
``flowlens.mode_switches`` and published as JSON on the Redis channel ``changes:alerts``.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime

import pyarrow as pa

from ingest.config import FlowLensConfig
from ingest.land.base import OnDone, Watermark, WindowRead
from ingest.land.kafka import KafkaLanding
from ingest.land.postgres import PostgresLanding
from ingest.scaling.alerts import publish_alert
from ingest.scaling.shared import SharedDecision
from ingest.scaling.switch import KAFKA, POSTGRES, ModeSwitcher, Switch
from ingest.schema import FLOW_SCHEMA, receive_times_us
from ingest.services import probe

log = logging.getLogger(__name__)

PROBE_RETRY_SECONDS = 10.0
RECORD_ATTEMPTS = 4
RECORD_SQL = """
INSERT INTO flowlens.mode_switches (instance, switched_at, from_landing, to_landing, rate_flows_per_s, reason)
VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING
"""
SWITCHES_SQL = """
SELECT instance, switched_at, from_landing, to_landing, rate_flows_per_s, reason
FROM flowlens.mode_switches WHERE switched_at >= %s AND switched_at < %s ORDER BY switched_at, instance
"""


def switch_event(switch: Switch, instance: str, at: datetime) -> dict:
    """The JSON published on ``changes:alerts`` (and logged) for one switch."""
    return {
        "kind": "mode_switch",
        "instance": instance,
        "at": at.isoformat(),
        "wall_clock": datetime.now(UTC).isoformat(),
        "from": switch.source,
        "to": switch.target,
        "rate_flows_per_s": round(switch.rate, 1),
        "reason": switch.reason,
    }


class AutoLanding:
    """The :class:`ingest.land.base.Landing` of the auto mode."""

    name = "auto"

    def __init__(self, cfg: FlowLensConfig, stats=None, clock=time.monotonic, processes: int | None = None,
                 decision: SharedDecision | None = None):  # fmt: skip
        """``decision``: the daemon's shared decision (one per daemon, see :mod:`ingest.scaling.shared`);
        without it this process decides alone, on its own rate times ``processes``."""
        self.cfg = cfg
        self.stats = stats
        self.clock = clock
        self.pg = PostgresLanding(cfg.postgres.dsn(), cfg.backpressure.postgresql, stats=stats)
        self._kafka: KafkaLanding | None = None
        self.decision = decision
        if decision is not None:  # the daemon-wide count is measured, not estimated
            self.switcher = ModeSwitcher(cfg.thresholds.kafka, 1, clock(), landing=decision.landing)
        else:
            count = cfg.ingest.process_count if processes is None else processes
            self.switcher = ModeSwitcher(cfg.thresholds.kafka, count, clock())
        self.instance = cfg.ingest.instance_id or "ingest"
        self._writers = ThreadPoolExecutor(cfg.ingest.landing_writers, thread_name_prefix="flowlens-auto")
        self._pg_pending: list[tuple[Future, pa.RecordBatch, OnDone]] = []
        self._probe: tuple[Switch, Future] | None = None
        self._side = ThreadPoolExecutor(1, thread_name_prefix="flowlens-auto-side")  # records and alerts
        self._window_clock_us = 0  # newest receive_time written: the clock that assigns windows
        self._used_kafka = False  # heartbeats go to Kafka once this process has landed there
        self.switches: list[dict] = []  # what this landing switched (for tests and the final report)

    @property
    def active(self) -> str:
        if self.decision is not None and not self.decision.leader:
            return self.decision.landing  # a follower writes where the leader decided
        return self.switcher.landing

    @property
    def deciding(self) -> bool:
        """Whether this process makes the switch decisions (alone, or as the daemon's leader)."""
        return self.decision is None or self.decision.leader

    @property
    def kafka(self) -> KafkaLanding:
        if self._kafka is None:
            self._kafka = KafkaLanding(
                self.cfg.kafka.bootstrap_servers,
                self.cfg.kafka.raw_topic,
                stats=self.stats,
                message_max_flows=self.cfg.ingest.kafka_message_max_flows,
                read_slack_seconds=self.cfg.ingest.kafka_read_slack_seconds,
            )
        return self._kafka

    # --- writing ------------------------------------------------------------------------------
    def write_async(self, batch: pa.RecordBatch, on_done: OnDone) -> None:
        """Land ``batch`` on the current landing; ``on_done(failed, error)`` runs from :meth:`poll`."""
        now = self.clock()
        if batch.num_rows:
            self._window_clock_us = max(self._window_clock_us, int(receive_times_us(batch).max()))
        if self.decision is not None:
            self.decision.add(batch.num_rows)
        else:
            self.switcher.observe(now, batch.num_rows)
        self._consider(now)
        if self.active == KAFKA:
            self._used_kafka = True
            self.kafka.write_async(batch, on_done)
        else:
            self._pg_pending.append((self._writers.submit(self.pg.write, batch), batch, on_done))

    def write(self, batch: pa.RecordBatch) -> None:
        result: list = []
        self.write_async(batch, lambda failed, error: result.append((failed, error)))
        while not result:
            self.poll(0.05)
        failed, error = result[0]
        if failed:
            raise RuntimeError(f"landing {len(failed)} batch(es) in {self.active} failed: {error}")

    def poll(self, timeout: float = 0.0) -> int:
        """Serve Kafka delivery reports and finished PostgreSQL writes; decide a switch on an idle rate too."""
        served = self._kafka.poll(timeout) if self._kafka is not None else 0
        if not self._kafka and timeout and self._pg_pending:
            time.sleep(min(timeout, 0.01))
        still = []
        for future, batch, on_done in self._pg_pending:
            if not future.done():
                still.append((future, batch, on_done))
                continue
            error = future.exception()
            on_done([batch], str(error)) if error is not None else on_done([], None)
            served += 1
        self._pg_pending = still
        self._consider(self.clock())
        return served

    def outstanding(self) -> int:
        return len(self._pg_pending) + (self._kafka.outstanding() if self._kafka is not None else 0)

    def flush(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self._pg_pending and time.monotonic() < deadline:
            self.poll(0.05)
        left = self._kafka.flush(max(0.0, deadline - time.monotonic())) if self._kafka is not None else 0
        return left + len(self._pg_pending)

    # --- switching ----------------------------------------------------------------------------
    def _consider(self, now: float) -> None:
        if not self.deciding:
            return
        if self.decision is not None:
            self.switcher.observe(now, self.decision.new_flows())
        if self._probe is not None:
            switch, future = self._probe
            if future.done():
                self._probe = None
                self._finish(switch, future, now)
            return
        switch = self.switcher.decide(now)
        if switch is not None:
            check = self._probe_kafka if switch.target == KAFKA else self._probe_postgres
            self._probe = (switch, self._side.submit(check))

    def _probe_kafka(self) -> None:
        self.kafka.partitions()  # metadata of flows.raw: the broker answers and the topic exists

    def _probe_postgres(self) -> None:
        with self.pg.pool.connection(timeout=5.0) as conn:
            conn.execute("SELECT 1")

    def _finish(self, switch: Switch, probe: Future, now: float) -> None:
        error = probe.exception()
        if error is not None:
            log.warning("auto: %s -> %s wanted (%s) but %s is unreachable (%s); staying on %s, trying again in %.0fs",
                        switch.source, switch.target, switch.reason, switch.target, str(error).strip()[:200],
                        switch.source, PROBE_RETRY_SECONDS)  # fmt: skip
            if self.stats is not None:
                self.stats.landing_failures[switch.target] += 1
            self.switcher.postpone(now, PROBE_RETRY_SECONDS)
            return
        self.switcher.commit(switch)
        if self.decision is not None:
            self.decision.set_landing(switch.target)
        self._used_kafka = self._used_kafka or switch.target == KAFKA
        # On the window clock (receive or export time, as the flows are), so a switch is listed with
        # the window whose flows it split, in replays too; the wall clock goes in the event.
        at = datetime.fromtimestamp(self._window_clock_us / 1e6, UTC) if self._window_clock_us else datetime.now(UTC)
        event = switch_event(switch, self.instance, at)
        self.switches.append(event)
        log.info("auto: landing switched %s -> %s (%s)", switch.source, switch.target, switch.reason)
        if self.stats is not None:
            self.stats.mode_switches[f"{switch.source}>{switch.target}"] += 1
        self._side.submit(self._announce, switch, event, at)

    def _announce(self, switch: Switch, event: dict, at: datetime) -> None:
        """Record the switch in PostgreSQL (a few tries) and publish it on Redis; failures are logged."""
        publish_alert(self.cfg, event)
        row = (self.instance, at, switch.source, switch.target, switch.rate, switch.reason)
        for attempt in range(RECORD_ATTEMPTS):
            try:
                with self.pg.pool.connection(timeout=10.0) as conn:
                    conn.execute(RECORD_SQL, row)
                return
            except Exception as exc:
                log.warning("auto: switch not recorded in flowlens.mode_switches (%s), attempt %d of %d",
                            str(exc).strip()[:200], attempt + 1, RECORD_ATTEMPTS)  # fmt: skip
                time.sleep(2**attempt)

    # --- watermarks ---------------------------------------------------------------------------
    def heartbeat(self, instance: str, landed_through: datetime, flows_landed: int) -> None:
        """PostgreSQL always; Kafka too once it was used (its readers stop at heartbeats)."""
        self.instance = instance
        self.pg.heartbeat(instance, landed_through, flows_landed)
        self._used_kafka = self._used_kafka or self.active == KAFKA  # a follower may not have written yet
        if not self._used_kafka:  # never block on a Kafka this process has not landed in
            return
        try:
            self._kafka.heartbeat(instance, landed_through, flows_landed)
        except Exception:
            if self.active == KAFKA:
                raise
            log.debug("auto: Kafka heartbeat not delivered while landing in PostgreSQL", exc_info=True)

    # --- reading ------------------------------------------------------------------------------
    def read_window(self, start: datetime, end: datetime) -> WindowRead:
        """The union of the window's flows in ``flow_raw`` and, once any process used it, ``flows.raw``."""
        pg = self.pg.read_window(start, end)
        switches = self._switches(start, end)
        parts, position = [pg.flows], {"postgres": pg.position, "rows": {POSTGRES: pg.flows.num_rows}}
        kafka = self._read_kafka(start, end)
        if kafka is not None:
            parts.append(kafka.flows)
            position["kafka"] = kafka.position
            position["rows"][KAFKA] = kafka.flows.num_rows
        position["switches"] = switches
        flows = pa.concat_tables([p.select(FLOW_SCHEMA.names).cast(FLOW_SCHEMA) for p in parts])
        source = f"auto:postgres:flow_raw+kafka:{self.cfg.kafka.raw_topic}"
        return WindowRead(flows=flows, source=source, position=position)

    def _read_kafka(self, start: datetime, end: datetime) -> WindowRead | None:
        """The window's part in Kafka; None only when Kafka is down and no process ever landed there.

        Kafka is read whenever it answers, not only after a recorded switch, so a switch whose
        record was lost still has its flows read.
        """
        if probe(self.cfg, "kafka") is not None and not self._kafka_used():
            return None
        try:
            return self.kafka.read_window(start, end)
        except Exception as exc:
            raise RuntimeError(
                f"window {start.isoformat()}: auto mode may have landed flows in Kafka, but "
                f"{self.cfg.kafka.bootstrap_servers} cannot be read ({exc}); "
                "start it (flowlens stack up --mode auto) and re-run the window"
            ) from exc

    def _switches(self, start: datetime, end: datetime) -> list[dict]:
        with self.pg.pool.connection() as conn:
            rows = conn.execute(SWITCHES_SQL, (start, end)).fetchall()
        keys = ("instance", "at", "from", "to", "rate_flows_per_s", "reason")
        return [dict(zip(keys, (r[0], r[1].isoformat(), *r[2:]), strict=True)) for r in rows]

    def _kafka_used(self) -> bool:
        """Whether any ingest process ever switched to Kafka (else flows.raw holds nothing of ours)."""
        with self.pg.pool.connection() as conn:
            row = conn.execute("SELECT EXISTS (SELECT 1 FROM flowlens.mode_switches WHERE to_landing = 'kafka')")
            return bool(row.fetchone()[0])

    def watermarks(self) -> list[Watermark]:
        return self.pg.watermarks()

    def newest_receive_time(self) -> datetime | None:
        times = [self.pg.newest_receive_time()]
        if probe(self.cfg, "kafka") is None:
            times.append(self.kafka.newest_receive_time())
        known = [t for t in times if t is not None]
        return max(known) if known else None

    def close(self) -> None:
        self.flush(30)
        self._writers.shutdown(wait=True)
        self._side.shutdown(wait=True)
        if self._kafka is not None:
            self._kafka.close()
        self.pg.close()
