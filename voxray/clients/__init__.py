"""Clients of a running voxray: the stage CLIs and the WebRTC caller (also the load harness's)."""
