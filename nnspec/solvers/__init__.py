"""Pure algorithms on tensors. They know nothing about specs, files or models: only points,
bounds, budgets and an objective, and they return typed stop reasons and traces."""
