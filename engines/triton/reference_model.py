"""Triton Python-backend model of the `reference` stack (copied into a repository as `model.py`).

It stands where TensorRT-LLM's `tensorrt_llm_bls` model stands in a TRT-LLM deployment and takes
the same request fields, so one benchmark client serves both: `text_input`, `max_tokens`, optional
`min_tokens` (no end-of-sequence stop before it), optional `stream`; it answers `text_output`,
streamed as text deltas on `/v2/models/<name>/generate_stream` (decoupled mode).

The model is the fake-quantized checkpoint restored with its ModelOpt state (the project's own
loader, importable because the server runs inside the project's environment), run in fp32 on the
CPU with greedy decoding and a KV cache. There is no in-flight batching: each request runs in its
own thread over the shared model and the threads take turns, one forward pass (one token) at a
time, which is what a CPU reference can honestly offer; its latencies are CPU measurements, not
TensorRT-LLM predictions.
Request tensors are read inside `execute` (reading them from another thread crashes the stub).
"""

import json
import locale
import threading
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


def _scalar(request, name, default=None):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    value = tensor.as_numpy().reshape(-1)[0]
    return value.decode() if isinstance(value, bytes) else value.item()


class TritonPythonModel:
    """Greedy streaming generation over a ModelOpt fake-quantized Hugging Face model."""

    def initialize(self, args):
        # The stub's embedded interpreter keeps the C (ASCII) locale whatever the environment
        # says; torch reads its own UTF-8 sources with the locale encoding at import.
        locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
        import torch

        # The same loader as the accuracy evaluation: the ModelOpt state restored, weights folded.
        from enginesweep.engines.quantize.modelopt_cpu import load_quantized_model

        params = json.loads(args["model_config"])["parameters"]
        model_dir = params["model_dir"]["string_value"]
        threads = int(params.get("torch_threads", {}).get("string_value", "0") or 0)
        if threads > 0:
            torch.set_num_threads(threads)
        self.torch = torch
        self.model, self.tokenizer = load_quantized_model(Path(model_dir))
        self.eos = self.tokenizer.eos_token_id
        self.max_seq_len = int(params["max_seq_len"]["string_value"])
        self.slots = threading.BoundedSemaphore(int(params["max_batch_size"]["string_value"]))
        # One forward pass at a time, each on every core: requests interleave token by token.
        # Concurrent passes would each start their own OpenMP team and oversubscribe the CPU
        # (seen: 4 requests on 2 cores ran ~10x slower than one after another).
        self.forward_lock = threading.Lock()

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                job = {
                    "text": _scalar(request, "text_input"),
                    "max_tokens": int(_scalar(request, "max_tokens")),
                    "min_tokens": int(_scalar(request, "min_tokens", 0)),
                    "stream": bool(_scalar(request, "stream", False)),
                }
            except Exception as exc:
                self._fail(sender, f"bad request: {exc}")
                continue
            threading.Thread(target=self._generate, args=(sender, job), daemon=True).start()
        return None

    def _fail(self, sender, message):
        sender.send(
            pb_utils.InferenceResponse(error=pb_utils.TritonError(message)),
            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
        )

    def _send(self, sender, text, final=False):
        out = pb_utils.Tensor("text_output", np.array([text.encode()], dtype=np.object_))
        flags = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if final else 0
        sender.send(pb_utils.InferenceResponse(output_tensors=[out]), flags=flags)

    def _generate(self, sender, job):
        with self.slots:  # max_batch_size sequences in flight; later requests wait here
            self._generate_in_slot(sender, job)

    def _generate_in_slot(self, sender, job):
        try:
            torch = self.torch
            ids = self.tokenizer(job["text"], return_tensors="pt")["input_ids"]
            if ids.shape[1] + job["max_tokens"] > self.max_seq_len:
                self._fail(
                    sender,
                    f"input {ids.shape[1]} + max_tokens {job['max_tokens']} tokens "
                    f"exceed max_seq_len {self.max_seq_len}",
                )
                return
            generated, sent, past = [], "", None
            with torch.inference_mode():
                step_input = ids
                for step in range(max(job["max_tokens"], 0)):
                    with self.forward_lock:
                        out = self.model(input_ids=step_input, past_key_values=past, use_cache=True)
                    past = out.past_key_values
                    token = int(out.logits[0, -1].argmax())
                    if token == self.eos and step >= job["min_tokens"]:
                        break
                    generated.append(token)
                    step_input = torch.tensor([[token]])
                    text = self.tokenizer.decode(generated, skip_special_tokens=True)
                    # hold back an incomplete UTF-8 character until its bytes arrive
                    if job["stream"] and not text.endswith("\ufffd") and len(text) > len(sent):
                        self._send(sender, text[len(sent) :])
                        sent = text
            text = self.tokenizer.decode(generated, skip_special_tokens=True)
            if job["stream"]:
                if len(text) > len(sent):
                    self._send(sender, text[len(sent) :])
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            else:
                self._send(sender, text, final=True)
        except Exception as exc:
            self._fail(sender, f"generation failed: {type(exc).__name__}: {exc}")
