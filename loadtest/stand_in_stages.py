"""Stand-in ASR, LLM and TTS stages on a real local gRPC server, for tests and benches whose
subject is the session or the gateway (turn-taking, speculation, recovery, media pacing),
not the models; the real models are covered by the tests against the Serve app.

* ASR: partials at each pause of the audio it gets (100 ms under -45 dBFS after speech),
  with a scripted text per pause; the final repeats the last partial.
* LLM: streams a scripted answer word by word (a word a token), honouring max_tokens
  and continuing after an assistant_prefix; can be told to fail mid-answer; its
  end-of-turn probability is scripted.
* TTS: 150 ms of tone per word received, each chunk naming its characters.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import numpy as np

from voxray.v1 import (
    asr_pb2,
    asr_pb2_grpc,
    common_pb2,
    llm_pb2,
    llm_pb2_grpc,
    tts_pb2,
    tts_pb2_grpc,
)

QUIET = 32768 * 10 ** (-45 / 20)


@dataclass
class Script:
    """What the stand-ins say. `asr_texts` are consumed in order, one per pause heard."""

    asr_texts: list[str] = field(default_factory=list)
    answer: str = "Sure, here is what I found for you today."
    fail_llm_after: int | None = None  # deltas, then UNAVAILABLE (once)
    llm_calls: list[list[tuple[str, str]]] = field(default_factory=list)
    # (assistant_prefix, max_tokens, when) of each Generate call
    llm_requests: list[tuple[str, int | None, float]] = field(default_factory=list)
    tts_first_audio: list[float] = field(default_factory=list)  # per stream
    tts_texts: list[str] = field(default_factory=list)
    word_delay_s: float = 0.03
    final_delay_s: float = 0.0  # a busy ASR replica
    partial_delay_s: float = 0.0  # ... whose pause decodes come late
    p_end: float = 0.01  # the LLM's end-of-turn probability: even odds
    fail_asr_after_audio: int | None = None  # audio messages, then UNAVAILABLE (once)
    asr_samples: list[int] = field(default_factory=list)  # audio samples heard, per stream
    fail_tts_after_chunks: int | None = None  # audio chunks, then UNAVAILABLE (once)
    # A model that calls this tool (name, arguments JSON) when offered it, after saying
    # `tool_preamble`, and then answers `tool_answer` with {result} from the tool's output
    tool_call: tuple[str, str] | None = None
    tool_preamble: str = ""
    tool_answer: str = "It says {result}."
    llm_tools: list[list[str]] = field(default_factory=list)  # tools offered, per call


class StandInAsr(asr_pb2_grpc.AsrServicer):
    def __init__(self, script: Script) -> None:
        self.s = script

    async def Transcribe(self, request_iterator: AsyncIterator[asr_pb2.AsrRequest],  # noqa: N802
                         context: grpc.aio.ServicerContext) -> AsyncIterator[asr_pb2.AsrEvent]:
        utterance, samples, loud_until, decoded_until, text = 0, 0, -1, -1, ""
        stream = len(self.s.asr_samples)
        self.s.asr_samples.append(0)
        yield asr_pb2.AsrEvent(ready=asr_pb2.AsrReady(model="stand-in"))
        async for req in request_iterator:
            kind = req.WhichOneof("kind")
            if kind == "audio":
                if self.s.fail_asr_after_audio is not None:
                    self.s.fail_asr_after_audio -= 1
                    if self.s.fail_asr_after_audio < 0:
                        self.s.fail_asr_after_audio = None
                        await context.abort(grpc.StatusCode.UNAVAILABLE, "the replica died")
                pcm = np.frombuffer(req.audio.pcm16, "<i2").astype(np.float32)
                samples += len(pcm)
                self.s.asr_samples[stream] = samples
                if len(pcm) and math.sqrt(float(np.mean(pcm * pcm))) > QUIET:
                    loud_until = samples
                if loud_until > decoded_until and samples - loud_until >= 1600:
                    decoded_until = loud_until
                    text = self.s.asr_texts.pop(0) if self.s.asr_texts else text
                    await asyncio.sleep(self.s.partial_delay_s)
                    yield asr_pb2.AsrEvent(utterance_id=utterance, partial=asr_pb2.Transcript(
                        text=text, audio_end_sample=samples))
            elif kind == "end_of_utterance":
                await asyncio.sleep(self.s.final_delay_s)
                yield asr_pb2.AsrEvent(utterance_id=utterance,
                                       final=asr_pb2.Transcript(text=text))
                utterance, text, decoded_until = utterance + 1, "", loud_until


class StandInLlm(llm_pb2_grpc.LlmServicer):
    def __init__(self, script: Script) -> None:
        self.s = script

    async def Generate(self, request: llm_pb2.LlmRequest,  # noqa: N802
                       context: grpc.aio.ServicerContext) -> AsyncIterator[llm_pb2.LlmEvent]:
        self.s.llm_calls.append([(m.role, m.content) for m in request.messages])
        limit = request.sampling.max_tokens if request.sampling.HasField("max_tokens") else None
        self.s.llm_requests.append((request.assistant_prefix, limit, time.monotonic()))
        offered = [t.name for t in request.tools]
        self.s.llm_tools.append(offered)
        last = request.messages[-1]
        call = self.s.tool_call
        if call is not None and call[0] in offered and last.role != "tool":
            for i, word in enumerate(self.s.tool_preamble.split()):
                yield llm_pb2.LlmEvent(delta=llm_pb2.TextDelta(
                    text=word if i == 0 else " " + word, token_count=1))
            yield llm_pb2.LlmEvent(tool_call=llm_pb2.ToolCall(
                id=f"call-{len(self.s.llm_calls)}", name=call[0], arguments=call[1]))
            yield llm_pb2.LlmEvent(done=llm_pb2.LlmDone(finish_reason="tool_calls"))
            return
        answer = self.s.tool_answer.format(result=last.content) if last.role == "tool" \
            else self.s.answer
        words = answer.split(" ")
        done = len(request.assistant_prefix.split()) if request.assistant_prefix else 0
        fail = self.s.fail_llm_after
        sent = 0
        for i, word in enumerate(words[done:], done):
            if fail is not None and i == fail:
                self.s.fail_llm_after = None
                await context.abort(grpc.StatusCode.UNAVAILABLE, "stand-in LLM replica died")
            if limit is not None and sent == limit:
                yield llm_pb2.LlmEvent(done=llm_pb2.LlmDone(finish_reason="length",
                                                            completion_tokens=sent))
                return
            await asyncio.sleep(self.s.word_delay_s)
            yield llm_pb2.LlmEvent(delta=llm_pb2.TextDelta(
                text=word if i == 0 else " " + word, token_count=1))
            sent += 1
        yield llm_pb2.LlmEvent(done=llm_pb2.LlmDone(finish_reason="stop",
                                                    completion_tokens=sent))


    async def EndOfTurn(self, request: llm_pb2.EndOfTurnRequest,  # noqa: N802
                        context: grpc.aio.ServicerContext) -> llm_pb2.EndOfTurnReply:
        return llm_pb2.EndOfTurnReply(p_end=self.s.p_end)


class StandInTts(tts_pb2_grpc.TtsServicer):
    RATE = 24_000

    def __init__(self, script: Script) -> None:
        self.s = script

    async def SynthesizeStream(  # noqa: N802
            self, request_iterator: AsyncIterator[tts_pb2.TtsStreamRequest],
            context: grpc.aio.ServicerContext) -> AsyncIterator[tts_pb2.TtsEvent]:
        text, spoken = "", 0
        tone = (np.sin(np.arange(self.RATE * 15 // 100) / 4) * 6000).astype("<i2")
        async for req in request_iterator:
            if req.WhichOneof("kind") != "text":
                continue
            text += req.text
            # speak every whole word received so far
            while (end := text.find(" ", spoken + 1)) != -1:
                if spoken == 0:
                    self.s.tts_first_audio.append(time.monotonic())
                if self.s.fail_tts_after_chunks is not None:
                    self.s.fail_tts_after_chunks -= 1
                    if self.s.fail_tts_after_chunks < 0:
                        self.s.fail_tts_after_chunks = None
                        self.s.tts_texts.append(text)
                        await context.abort(grpc.StatusCode.UNAVAILABLE, "TTS replica died")
                yield self._chunk(tone, spoken, end)
                spoken = end
        if spoken < len(text):
            yield self._chunk(tone, spoken, len(text))
        self.s.tts_texts.append(text)

    @staticmethod
    def _chunk(pcm: np.ndarray, start: int, end: int) -> tts_pb2.TtsEvent:
        return tts_pb2.TtsEvent(audio=tts_pb2.TtsAudio(
            audio=common_pb2.AudioChunk(pcm16=pcm.tobytes(), sample_rate=24_000),
            span=common_pb2.TextSpan(start=start, end=end), span_complete=True))


async def serve_stand_ins(script: Script) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    asr_pb2_grpc.add_AsrServicer_to_server(StandInAsr(script), server)
    llm_pb2_grpc.add_LlmServicer_to_server(StandInLlm(script), server)
    tts_pb2_grpc.add_TtsServicer_to_server(StandInTts(script), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"
