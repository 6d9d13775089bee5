"""Benchmark serving: latency, throughput and memory of a server, or of vLLM offline."""
