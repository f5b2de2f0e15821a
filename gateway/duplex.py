"""A duplex session: the user's audio <-> Moshi, in 80 ms frames at 24 kHz.

No VAD, turns or barge-in here: Moshi listens while it speaks and decides
itself when to talk. The session resamples the microphone into Moshi's
frames, plays Moshi's audio on a paced track, and forwards its words.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable

import grpc
import numpy as np
from aiortc.mediastreams import MediaStreamTrack

from gateway import events as ev
from gateway.audio_in import level_db, resampled
from gateway.config import GatewayConfig
from gateway.events import SessionEnded
from gateway.session.retry import Retrier
from voxray.paced_track import PacedAudioTrack
from voxray.stage_clients.moshi import FRAME_SAMPLES, SAMPLE_RATE, MoshiStream

log = logging.getLogger(__name__)

VOICE_DB = -45.0  # a mic frame louder than this counts as the user being there


def _unavailable(details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(),
                                grpc.aio.Metadata(), details)


class DuplexUnavailable(Exception):
    """Moshi could not take the conversation; `retry_after_s` is set when it is only full."""

    def __init__(self, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class JitterTrack(PacedAudioTrack):
    """Plays Moshi's 80 ms chunks as 20 ms frames, keeping a small playout buffer.

    Output starts once `prebuffer` samples wait, so a chunk arriving a little
    late does not leave a gap; an empty buffer plays silence and counts an
    underrun, then buffers again. More than `max_buffer` samples waiting means
    the network delivered a burst: the oldest audio is dropped to keep the lag.
    """

    def __init__(self, prebuffer_ms: int = 40, max_buffer_ms: int = 400) -> None:
        super().__init__(SAMPLE_RATE)
        self._pcm: deque[np.ndarray] = deque()
        self._queued = 0
        self._prebuffer = SAMPLE_RATE * prebuffer_ms // 1000
        self._max = SAMPLE_RATE * max_buffer_ms // 1000
        self._playing = False
        self.underruns = 0
        self.dropped_samples = 0

    def push(self, pcm: np.ndarray) -> None:
        self._pcm.append(pcm)
        self._queued += len(pcm)
        while self._queued > self._max:
            self._queued -= len(old := self._pcm.popleft())
            self.dropped_samples += len(old)

    def next_frame(self, now: float) -> np.ndarray:
        n = self.frame_samples
        if not self._playing and self._queued >= n + self._prebuffer:
            self._playing = True
        if not self._playing:
            return np.zeros(n, np.int16)
        if self._queued < n:
            self._playing = False
            self.underruns += 1
            return np.zeros(n, np.int16)
        out = np.empty(n, np.int16)
        filled = 0
        while filled < n:
            head = self._pcm[0]
            take = min(n - filled, len(head))
            out[filled:filled + take] = head[:take]
            filled += take
            if take == len(head):
                self._pcm.popleft()
            else:
                self._pcm[0] = head[take:]
        self._queued -= n
        return out


class DuplexSession:
    def __init__(self, config: GatewayConfig, channel: grpc.aio.Channel,
                 send: Callable[[ev.Event], None]) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.cfg = config
        self.send = send
        self.track = JitterTrack()
        self.last_voice_at = time.monotonic()
        self.closed = asyncio.Event()
        self._channel = channel
        self._moshi = MoshiStream(channel, self.id, ready_within_s=config.duplex_connect_s)
        self._connected = False

    async def connect(self) -> None:
        """Take a Moshi slot before the call is answered, so a full cluster is a 503."""
        try:
            await self._moshi.__aenter__()
        except TimeoutError:
            raise DuplexUnavailable("every duplex slot is busy; try again shortly", 5) from None
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise DuplexUnavailable("every duplex slot is busy; try again shortly", 5) from None
            raise DuplexUnavailable(f"duplex mode is unavailable: {e.code().name}: "
                                    f"{e.details()}") from None
        self._connected = True
        ready = self._moshi.ready
        assert ready is not None
        self.send(ev.Info("duplex_ready", "connected to Moshi",
                          {"replica": ready.replica_id, "slot": ready.slot}))

    async def run(self, mic: MediaStreamTrack) -> None:
        """Until the mic track ends or the session is closed.

        Raises SessionEnded when the Moshi stream fails and no new one can be had.
        """
        assert self._connected, "connect() first"
        parts = [asyncio.ensure_future(self._listen(mic)), asyncio.ensure_future(self._play()),
                 asyncio.ensure_future(self.closed.wait())]
        try:
            done, _ = await asyncio.wait(parts, return_when=asyncio.FIRST_COMPLETED)
            for part in done:
                part.result()
        finally:
            for part in parts:
                part.cancel()
            await asyncio.gather(*parts, return_exceptions=True)
            await self.close()

    async def _listen(self, mic: MediaStreamTrack) -> None:
        async for pcm, _ in resampled(mic, SAMPLE_RATE, FRAME_SAMPLES):
            if level_db(pcm) > VOICE_DB:
                self.last_voice_at = time.monotonic()
            self._moshi.send_frame(pcm.astype("<i2").tobytes())

    async def _play(self) -> None:
        retrier = Retrier(self.cfg.stage_retry)
        while True:
            try:
                async for out in self._moshi.outputs():
                    retrier.worked()
                    self.track.push(np.frombuffer(out.audio.pcm16, dtype="<i2"))
                    if out.text:
                        self.send(ev.AgentText("agent_text", 0, out.text))
                # ended while the call goes on: a drained or lost replica
                error = _unavailable("the Moshi stream ended")
            except grpc.aio.AioRpcError as e:
                error = e
            if self.closed.is_set():
                return
            await self._new_conversation(retrier, error)

    async def _new_conversation(self, retrier: Retrier, error: grpc.aio.AioRpcError) -> None:
        """The Moshi stream failed: a new one, on whatever slot Serve finds (the model's
        state went with the old one, so it starts afresh). Meanwhile the caller hears
        silence; SessionEnded when the retries (stage_retry) are spent."""
        while True:
            wait = retrier.wait_s(error)
            if wait is None:
                self.send(ev.error("moshi", f"{error.code().name}: {error.details()}"))
                raise SessionEnded(f"duplex stage failed: {error.code().name}")
            log.warning("session %s: Moshi stream failed (%s: %s); new stream, try %d",
                        self.id, error.code().name, error.details(), retrier.attempt)
            self.send(ev.Info("stage_retry", f"the Moshi stream failed ({error.code().name}); "
                              "a new conversation starts", {"stage": "moshi",
                                                            "attempt": retrier.attempt}))
            await asyncio.sleep(wait)
            stream = MoshiStream(self._channel, self.id, ready_within_s=self.cfg.duplex_connect_s)
            try:
                await stream.__aenter__()
            except TimeoutError:
                error = _unavailable("no Moshi slot came free in time")
                continue
            except grpc.aio.AioRpcError as e:
                error = e
                continue
            except RuntimeError as e:  # a stream that did not start with `ready`
                error = _unavailable(str(e))
                continue
            old, self._moshi = self._moshi, stream
            await old.__aexit__(None, None, None)
            assert stream.ready is not None
            self.send(ev.Info("duplex_restarted", "Moshi's replica was lost: a new "
                              "conversation started (it does not remember the old one)",
                              {"replica": stream.ready.replica_id, "slot": stream.ready.slot}))
            return

    async def close(self) -> None:
        self.closed.set()
        self._moshi.close_send()
        await self._moshi.__aexit__(None, None, None)
        self.track.stop()
