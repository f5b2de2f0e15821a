"""gRPC clients of the stages (ASR, LLM and Moshi streams), for the gateway and the
command-line clients; they depend on the generated stubs only."""
