"""The public face: WebRTC sessions, and clients of the stage deployments."""
