"""Planning: expand a sweep spec into trials, apply the hard rules, size memory, and predict
latency, throughput and cost with a transparent roofline model (`predicted:roofline`)."""

from enginesweep.build_configs.trial import TrialConfig
from enginesweep.evaluation.planning.expand import Plan, expand, plan_trial, trial_slug
from enginesweep.evaluation.planning.records import PlannedTrial

__all__ = ["Plan", "PlannedTrial", "TrialConfig", "expand", "plan_trial", "trial_slug"]
