"""The `trtllm-pytorch` stack's contract with TensorRT-LLM's LLM API (the PyTorch backend).

`options` writes a trial's LLM-API options (the YAML `trtllm-serve --extra_llm_api_options` and
Triton's `llmapi` `model.yaml` take) and checks every key against the pinned version's
allow-lists (TorchLlmArgs forbids unknown keys: a wrong one stops the server at start);
`commands` builds hf_ptq.py, trtllm-serve, launch_triton_server.py and lm-eval commands;
`repository` lays out Triton's `llmapi` model repository; `scripts` writes them as shell scripts.
The version facts live beside the engine stack's, in `engines/trtllm/flags/trtllm-<line>.json`.
Nothing here imports `tensorrt_llm`.
"""
