"""An asyncio-native load generator for voxray with a Locust-style command line.

Every simulated user is a real WebRTC caller (aiortc, `voxray.clients.caller.Caller`) on one
shared asyncio event loop: it speaks real audio, listens to the reply, and records
what it heard. See `python -m loadtest --help`.
"""
