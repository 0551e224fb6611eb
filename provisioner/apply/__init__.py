"""The executor: performs a plan's actions in a safe order."""
