"""One simulated caller: sessions of turns over WebRTC, as the scenario says."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from functools import cache

import numpy as np

from loadtest.harness.scenario import Scenario
from loadtest.harness.stats import RunStats, TurnRecord
from voxray.clients.caller import AUDIBLE, RATE, Caller, Heard, let_agent_talk, load_48k, speak_turn


@cache
def _audio(path: str) -> np.ndarray:
    return load_48k(path)


def underruns(heard: Heard, since: float, until: float, gap_ms: float) -> tuple[int, float]:
    """Gaps in the agent's audio inside one reply, and the reply's audible length in seconds.

    Inside the reply (first to last audible frame) a gap is a silent stretch longer than
    `gap_ms` (the gateway padded silence: TTS fell behind) or frames arriving that much
    late (the sender or the network stalled).
    """
    frames = [(at, pcm) for at, pcm in heard.frames if since <= at <= until]
    loud = [i for i, (_, pcm) in enumerate(frames) if np.abs(pcm).max(initial=0) > AUDIBLE]
    if not loud:
        return 0, 0.0
    gaps, silent_s = 0, 0.0
    prev_at = frames[loud[0]][0]
    for at, pcm in frames[loud[0]:loud[-1] + 1]:
        if (at - prev_at) * 1000 > gap_ms:
            gaps += 1
        prev_at = at
        if np.abs(pcm).max(initial=0) > AUDIBLE:
            silent_s = 0.0
            continue
        before = silent_s
        silent_s += len(pcm) / RATE
        if before * 1000 <= gap_ms < silent_s * 1000:
            gaps += 1
    return gaps, frames[loud[-1]][0] - frames[loud[0]][0]


def arrival_gaps(heard: Heard, since: float, until: float, gap_ms: float) -> int:
    """Times the agent's audio stopped arriving for longer than `gap_ms` (duplex audio is
    continuous: Moshi sends a frame every 80 ms, silent or not)."""
    times = [at for at, _ in heard.frames if since <= at <= until]
    return sum((b - a) * 1000 > gap_ms for a, b in zip(times, times[1:], strict=False))


# The caller began over an answer that ended within this: too late to interrupt (the
# gateway needs ~100 ms of speech to hear it, and audio sent by then still arrives).
ANSWER_ENDED_S = 0.3
# events in which the gateway says that something failed, and what
SAYS_WHY = ("error", "stage_retry", "duplex_restarted", "session_ended")


class RefusedError(ConnectionError):
    pass


class User:
    def __init__(self, uid: int, url: str, scenario: Scenario, stats: RunStats,
                 stop: asyncio.Event, seed: int) -> None:
        self.uid = uid
        self.url = url
        self.sc = scenario
        self.stats = stats
        self.stop = stop
        self.rng = random.Random(seed)
        self.sessions = 0
        self._next = uid  # sequential order: each user starts at its own utterance

    def _utterance(self) -> str:
        if self.sc.order == "random":
            return self.rng.choice(self.sc.utterances)
        path = self.sc.utterances[self._next % len(self.sc.utterances)]
        self._next += 1
        return path

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def run(self) -> None:
        """Sessions until the run stops (a session under way ends after its current turn)."""
        while not self.stop.is_set():
            try:
                await self.session()
            except RefusedError:
                await self._pause(self.rng.uniform(2.0, 5.0))  # the gateway says Retry-After: 5
                continue
            await self._pause(self.sc.session_pause_s.draw(self.rng))

    async def session(self) -> None:
        caller = Caller(self.url, mode=self.sc.mode, token=self.sc.token)
        try:
            await caller.connect()
        except ConnectionError as e:
            if "answered 503" in str(e):
                self.stats.sessions_refused += 1
                raise RefusedError(str(e)) from None
            self.stats.sessions_failed += 1
            self.stats.error(f"connect: {e}")
            await self._pause(2.0)
            return
        except Exception as e:  # noqa: BLE001 - any failure is counted, the user goes on
            self.stats.sessions_failed += 1
            self.stats.error(f"connect: {type(e).__name__}: {e}")
            await self._pause(2.0)
            return
        self.sessions += 1
        sid = self.sessions
        self.stats.session_open()
        opened = time.monotonic()
        dropped = False
        try:
            for i in range(self.sc.turns_per_session):
                if i and self.stop.is_set():
                    break
                events_before = len(caller.events)
                if self.sc.mode == "duplex":
                    rec = await self.duplex_turn(caller, sid)
                else:
                    barge = self.rng.random() < self.sc.barge_in.probability
                    rec = await (self.barge_in(caller, sid) if barge else self.turn(caller, sid))
                rec.end_s = round(self.stats.now(), 2)
                rec.said_why = next((e["type"] for e in caller.events[events_before:]
                                     if e["type"] in SAYS_WHY), "")
                self.stats.turns.append(rec)
                if any(e["type"] == "session_ended" for e in caller.events):
                    dropped = True
                    ended = [e for e in caller.events if e["type"] == "session_ended"]
                    self.stats.error(f"session ended by the gateway: {ended[0].get('message')}")
                    break
                if i + 1 < self.sc.turns_per_session and self.sc.mode != "duplex":
                    await self._pause(self.sc.think_time_s.draw(self.rng))
        finally:
            with contextlib.suppress(Exception):
                await caller.hang_up()
            self.stats.session_closed(time.monotonic() - opened, dropped)

    async def turn(self, caller: Caller, sid: int) -> TurnRecord:
        t_s = self.stats.now()
        rec = TurnRecord(t_s, self.uid, sid, "turn", ok=False)
        start = len(caller.events)
        sent_at = time.monotonic()
        try:
            res = await speak_turn(caller, _audio(self._utterance()), self.sc.turn_timeout_s)
        except Exception as e:  # noqa: BLE001
            rec.error = f"turn: {type(e).__name__}: {e}"
            self.stats.error(rec.error)
            return rec
        errors = [e for e in caller.events[start:] if e["type"] == "error"]
        if errors:
            rec.error = f"gateway error ({errors[0].get('detail', {}).get('stage')}): " \
                        f"{errors[0].get('message')}"
        elif not res.gateway:
            rec.error = f"no reply within {self.sc.turn_timeout_s:.0f} s"
        elif res.client_ttfat_ms is None:
            rec.error = "turn_metrics came but no audible reply was heard"
        if rec.error:
            self.stats.error(rec.error)
            return rec
        rec.ok = True
        rec.client_ttfat_ms = round(res.client_ttfat_ms or 0.0, 1)
        rec.gateway = {k: float(v) for k, v in res.gateway.items()
                       if isinstance(v, int | float) and k.endswith("_ms")}
        rec.underruns, rec.reply_s = underruns(caller.heard, sent_at, time.monotonic(),
                                               self.sc.underrun_gap_ms)
        return rec

    async def duplex_turn(self, caller: Caller, sid: int) -> TurnRecord:
        """Say an utterance to Moshi, then listen for the think time: Moshi talks when it
        wants to, so TTFAT here is the user's end of speech to the first audible sample."""
        rec = TurnRecord(self.stats.now(), self.uid, sid, "duplex", ok=False)
        started = time.monotonic()
        try:
            if not any(e["type"] == "duplex_ready" for e in caller.events):
                await caller.wait_event("duplex_ready", 10)
            _, last = caller.mic.say(_audio(self._utterance()))
            ended = await asyncio.wait_for(last, self.sc.turn_timeout_s)
        except Exception as e:  # noqa: BLE001
            rec.error = f"duplex: {type(e).__name__}: {e}"
            self.stats.error(rec.error)
            return rec
        listen_s = self.sc.think_time_s.draw(self.rng)
        await asyncio.sleep(min(1.0, listen_s))  # even when the run is stopping
        await self._pause(listen_s - 1.0)
        first = caller.heard.first_audible_after(ended)
        rec.underruns = arrival_gaps(caller.heard, started, time.monotonic(),
                                     self.sc.underrun_gap_ms)
        if first is None:
            rec.error = "duplex: no audible agent audio after the utterance"
            self.stats.error(rec.error)
            return rec
        rec.ok = True
        rec.client_ttfat_ms = round((first - ended) * 1000, 1)
        rec.reply_s = round(time.monotonic() - first, 2)
        return rec

    async def barge_in(self, caller: Caller, sid: int) -> TurnRecord:
        """Ask for a long answer, let it play, talk over it: the agent must stop."""
        bi = self.sc.barge_in
        rec = TurnRecord(self.stats.now(), self.uid, sid, "barge_in", ok=False)
        try:
            await let_agent_talk(caller, _audio(bi.prompt), bi.talk_s.draw(self.rng),
                                 self.sc.turn_timeout_s)
            n = len(caller.events)
            spoke, _ = caller.mic.say(_audio(bi.interrupt_with))
            spoke_at = await spoke
            got = await caller.wait_event(("interrupted", "agent_done", "session_ended"),
                                          self.sc.turn_timeout_s, since=n)
            if got["type"] != "interrupted":
                heard = caller.heard.audible_between(spoke_at, float("inf"))
                if got["type"] == "agent_done" and max(heard, default=spoke_at) \
                        <= spoke_at + ANSWER_ENDED_S:
                    rec.missed = True  # the answer ended as the caller began: nothing to stop
                else:
                    rec.error = f"barge-in: no interruption ({got['type']})"
                    self.stats.error(rec.error)
                with contextlib.suppress(TimeoutError):  # the reply to what was said over it
                    await caller.wait_event(("agent_done", "session_ended"),
                                            self.sc.turn_timeout_s, since=n + 1)
                return rec
            paused = [e for e in caller.events[n:] if e["type"] == "agent_paused"]
            if paused:
                rec.barge_in_stop_ms = float(paused[0]["detail"]["stop_ms"])
            audible = caller.heard.audible_between(spoke_at, float("inf"))
            # the interruption's own reply starts later; only the old answer's tail counts
            interrupted_at = got["received_at"]
            tail = [at for at in audible if at <= interrupted_at + 0.3]
            rec.barge_in_heard_ms = round((max(tail, default=spoke_at) - spoke_at) * 1000, 1)
            await caller.wait_event(("agent_done", "session_ended"), self.sc.turn_timeout_s,
                                    since=caller.events.index(got) + 1)
        except Exception as e:  # noqa: BLE001
            rec.error = f"barge-in: {type(e).__name__}: {e}"
            self.stats.error(rec.error)
            return rec
        rec.ok = True
        return rec
