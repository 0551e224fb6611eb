"""The planner: a pure function from desired, recorded and observed facts to a Plan."""
