"""The `trtllm-engine` stack's contract with TensorRT-LLM 1.2 (the TensorRT engine path).

`contract` holds each supported version's accepted command-line options and Triton template
placeholders; `commands` builds the exact commands (checkpoint, build, repository, launch);
`templates` fills and parses Triton `config.pbtxt` files; `outputs` parses what the GPU machine
writes (engine `config.json`, build logs, metrics, trtllm-bench reports); `scripts` writes the
commands as runnable shell scripts. Nothing here imports `tensorrt_llm`.
"""
