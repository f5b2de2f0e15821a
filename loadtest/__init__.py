"""Load generation and benchmarks; traffic goes to this machine's loopback only."""
