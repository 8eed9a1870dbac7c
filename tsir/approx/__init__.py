"""Approximate mode: real models and data, accuracy budgets, and the approximate search around the exact one."""
