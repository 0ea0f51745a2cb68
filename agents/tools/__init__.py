"""The agents' tools: each computes its numbers in code and returns plain JSON data for the model to word."""
