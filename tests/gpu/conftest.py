"""GPU tests: the TensorRT-LLM stacks for real. Every test here carries the `gpu` marker and is
skipped unless an NVIDIA GPU and `tensorrt_llm` are present (see tests/conftest.py): the
trtllm-engine stack end to end on a tiny model (test_trtllm_engine_gpu.py), and the trtllm-pytorch
stack through both servers and lm-eval's trtllm model (test_trtllm_pytorch_gpu.py)."""
