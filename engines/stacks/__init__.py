"""Build stacks behind one protocol, chosen by name from a lazy registry (see `base.py`)."""

from enginesweep.engines.stacks.base import BuildKnobs, BuildResult, Stack, StackUnavailable, get_stack

__all__ = ["BuildKnobs", "BuildResult", "Stack", "StackUnavailable", "get_stack"]
