"""Planning: expand a sweep spec into trials, apply the hard rules, size memory, and predict
latency, throughput and cost with a transparent roofline model (`predicted:roofline`)."""

from evaluation.planning.expand import Plan, expand, plan_trial, trial_slug
from evaluation.planning.records import PlannedTrial, TrialConfig

__all__ = ["Plan", "PlannedTrial", "TrialConfig", "expand", "plan_trial", "trial_slug"]
