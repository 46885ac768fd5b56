"""What a run leaves and what is made of it: the run dir, trial tables and Pareto front,
the report and its figures, pick under a budget and the exported variant."""
