"""Load benchmarks of served engines: run aiperf against Triton, parse its outputs into records.

`aiperf_runner` builds and runs the aiperf command for TensorRT-LLM's `generate_stream` contract;
`results` turns the per-request records aiperf writes into an `evaluation.records.BenchmarkResult`
(latency percentiles, throughput per GPU and per user, goodput under the SLA).
"""
