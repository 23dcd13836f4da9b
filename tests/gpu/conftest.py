"""GPU tests: the TensorRT-LLM stacks for real. Every test here carries the `gpu` marker and is
skipped unless an NVIDIA GPU and `tensorrt_llm` are present (see tests/conftest.py). None exist
yet: they arrive with the trtllm-engine and trtllm-pytorch stacks."""
