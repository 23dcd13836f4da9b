"""The build side: checkpoints, quantization, build stacks, Triton repositories, servers, the engine
store and the model registry. Never imports `flows`."""
