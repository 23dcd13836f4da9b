"""Triton: model repositories shaped like TensorRT-LLM's, and the server process around them."""
