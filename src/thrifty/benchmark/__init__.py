"""Benchmark latency, throughput and memory; project cost per GPU type."""
