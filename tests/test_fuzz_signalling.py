"""Bad bytes at signalling: 3000 random and mutated requests at every HTTP route of a
gateway (over 1000 each at the two offer routes, WHIP's and the Realtime API's call
flow) get a 4xx with a reason (or a 201 for an offer that is still a valid one), never
a server error, and the gateway goes on answering good offers."""

from __future__ import annotations

import random
from collections import Counter

import aiohttp
from aiortc import RTCPeerConnection

from tests.test_gateway_e2e import start_gateway
from tests.waiting import until
from voxray import runtime

N = 3000
BOUNDARY = b"f0zzb0undary"


async def real_offer() -> str:
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendrecv")
    pc.createDataChannel("events")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return str(sdp)


def mutated(sdp: str, rng: random.Random) -> bytes:
    lines = sdp.split("\r\n")
    how = rng.randrange(9)
    if how == 0:  # drop lines
        lines = [line for line in lines if rng.random() > 0.3]
    elif how == 1:  # duplicate some
        lines = [x for line in lines for x in ([line] * rng.choice([1, 1, 2, 5]))]
    elif how == 2:  # shuffle
        rng.shuffle(lines)
    elif how == 3:  # absurd numbers
        lines = [line.replace("111", str(rng.choice([-1, 2**64, 0, 10**30]))) for line in lines]
    elif how == 4:  # truncate
        return sdp.encode()[: rng.randrange(len(sdp))]
    elif how == 5:  # flip bytes
        raw = bytearray(sdp.encode())
        for _ in range(rng.randrange(1, 40)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw)
    elif how == 6:  # unicode and control characters in values
        lines = [line + rng.choice(["\u202e", "\x00", "é" * 50, "\ud7ff", " " * 3000])
                 for line in lines]
    elif how == 7:  # a huge attribute
        lines.insert(rng.randrange(len(lines)), "a=" + "x" * rng.choice([10, 10_000, 60_000]))
    else:  # keys of other media and nonsense sections
        lines.insert(rng.randrange(len(lines)), rng.choice(
            ["m=video 9 UDP/TLS/RTP/SAVPF 96", "m=audio 0 RTP/AVP", "c=IN IP6 ::1",
             "a=fingerprint:sha-256 ZZ", "a=ice-ufrag:", "m=application 9 foo"]))
    return "\r\n".join(lines).encode(errors="surrogatepass")


def multipart(fields: list[tuple[bytes, bytes]], rng: random.Random) -> bytes:
    """A form as the openai SDK posts it (`sdp`, `session`), sometimes broken."""
    body = b"".join(b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="' + name
                    + b'"\r\n\r\n' + value + b"\r\n" for name, value in fields)
    body += b"--" + BOUNDARY + b"--\r\n"
    if rng.random() < 0.2:
        body = body[: rng.randrange(len(body) + 1)]
    return body


def realtime_call_request(sdp: str, rng: random.Random) -> tuple[str, str, bytes,
                                                                   dict[str, str]]:
    """POST /v1/realtime/calls: an SDP body, or a form of sdp and session settings."""
    if rng.random() < 0.4:
        return "POST", "/v1/realtime/calls", mutated(sdp, rng), {
            "Content-Type": rng.choice(["application/sdp"] * 4 + ["text/plain", ""])}
    session = rng.choice([b'{"type": "realtime"}', b"{", b"[]", b"null", b"\xff\xfe",
                          b'{"audio": {"input": {"format": "mp3"}}}',
                          b'{"output_modalities": "text"}', b'{"instructions": 5}',
                          b'{"turn_detection": {"type": "semantic_vad", "eagerness": 9}}',
                          b'{"tools": [{"type": "mcp"}]}', b'{"type": "realtime"}' * 50])
    fields = [(b"sdp", mutated(sdp, rng)), (b"session", session)]
    if rng.random() < 0.2:
        fields = rng.sample(fields, rng.randrange(len(fields) + 1))
    content_type = "multipart/form-data; boundary=" + rng.choice(
        [BOUNDARY.decode()] * 8 + ["", "other"])
    return "POST", "/v1/realtime/calls", multipart(fields, rng), {"Content-Type": content_type}


def random_request(sdp: str, rng: random.Random) -> tuple[str, str, bytes, dict[str, str]]:
    if rng.random() < 0.5:
        return realtime_call_request(sdp, rng)
    kind = rng.randrange(10)
    headers = {"Content-Type": rng.choice(["application/sdp"] * 6 + [
        "text/plain", "application/json", "application/sdp; charset=latin-1", ""])}
    if rng.random() < 0.1:
        headers["Authorization"] = rng.choice(["Bearer", "Bearer x", "\u00ff", "Basic Zm9v"])
    if kind < 5:
        return "POST", "/whip", mutated(sdp, rng), headers
    if kind < 7:  # bytes that are no SDP at all
        body = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 7, 300, 5000])))
        return "POST", "/whip", body, headers
    if kind == 7:
        mode = rng.choice(["duplex", "karaoke", "", "%ff", "pipeline" * 100])
        return "POST", f"/whip?mode={mode}", mutated(sdp, rng), headers
    if kind == 8:
        cid = rng.choice(["", "nope", "%2e%2e", "x" * 5000, "\u00e9", "12345"])
        return "DELETE", rng.choice(["/whip/", "/v1/realtime/calls/"]) + cid, b"", headers
    path = rng.choice(["/", "/healthz", "/metrics", "/static/../../etc/passwd",
                       "/static/index.html", "/whip/", "/nope", "/v1/realtime", "/twilio",
                       "/v1/realtime/calls"])
    return rng.choice(["GET", "POST", "PUT", "PATCH"]), path, b"\x00" * rng.randrange(50), headers


async def test_random_and_mutated_requests_get_4xx_never_5xx() -> None:
    # no stages: the subject is signalling; a session an offer opens ends on its own
    runner, gw, url = await start_gateway(f"127.0.0.1:{runtime.free_port()}", max_sessions=2000,
                                          connect_timeout_s=5)
    rng = random.Random(20261202)
    sdp = await real_offer()
    statuses: Counter[int] = Counter()
    offers: Counter[str] = Counter()  # POSTs at each offer route
    errors = []
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(N):
                method, path, body, headers = random_request(sdp, rng)
                route = path.split("?")[0]
                if method == "POST" and route in ("/whip", "/v1/realtime/calls"):
                    offers[route] += 1
                async with http.request(method, url + path, data=body,
                                        headers=headers) as res:
                    statuses[res.status] += 1
                    text = await res.text(errors="replace")
                    # 503 is the one server status that is right here: a duplex offer
                    # while no Moshi replica can be reached (it says so)
                    if res.status >= 500 and not (res.status == 503 and "mode=duplex" in path
                                                  and "duplex" in text):
                        errors.append((res.status, method, path, body[:200], text[:300]))
                    elif 400 <= res.status < 500 and method == "POST" and route in offers:
                        assert text.strip(), (res.status, body[:200])  # a reason
            print(f"\n{N} requests: statuses {dict(sorted(statuses.items()))}, "
                  f"offers by route {dict(offers)}, server errors {len(errors)}")
            assert not errors, errors[:5]
            assert statuses[400] > N // 4 and sum(statuses.values()) == N, statuses
            assert min(offers.values()) >= 1000, offers
            # still serving: health, and a good offer gets its answer
            async with http.get(f"{url}/healthz") as res:
                assert res.status == 200
            async with http.post(f"{url}/whip", data=await real_offer(),
                                 headers={"Content-Type": "application/sdp"}) as res:
                assert res.status == 201, await res.text()
        await until(lambda: not gw.calls, within_s=60, what="sessions without stages end")
    finally:
        await runner.cleanup()


async def test_one_address_cannot_take_every_slot() -> None:
    """New sessions per client address are limited (here: behind a reverse proxy on this
    machine, which names the client in X-Forwarded-For); another address still gets in."""
    runner, gw, url = await start_gateway(f"127.0.0.1:{runtime.free_port()}",
                                          offers_per_minute=3)
    sdp_type = {"Content-Type": "application/sdp"}
    try:
        async with aiohttp.ClientSession() as http:
            seen = []
            for client in ["203.0.113.5"] * 5 + ["203.0.113.6"]:
                headers = sdp_type | {"X-Forwarded-For": f"198.51.100.1, {client}"}
                async with http.post(f"{url}/whip", data="v=0\r\nm=audio nonsense\r\n",
                                     headers=headers) as res:
                    seen.append(res.status)
                    if res.status == 429:
                        assert res.headers["Retry-After"] == "60"
            assert seen == [400, 400, 400, 429, 429, 400], seen
            for _ in range(5):  # a client on this machine itself is not limited
                async with http.post(f"{url}/whip", data="v=0\r\n", headers=sdp_type) as res:
                    assert res.status == 400
    finally:
        await runner.cleanup()
