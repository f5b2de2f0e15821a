"""The OpenAI Realtime API, served: a WebSocket at /v1/realtime on the pipeline session."""
