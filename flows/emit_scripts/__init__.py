"""`enginesweep plan --emit-scripts`: each GPU trial as a bash script for a GPU host, composed from
the build side's commands (`engines.trtllm.commands`, `engines.llmapi.commands`), the benchmark's
aiperf command (`evaluation.benchmark.aiperf_runner`) and the plan's trials. It sits in flows/
because it composes both layers below it."""
