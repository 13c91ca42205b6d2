"""Small test helpers for the user tests: misbehaving servers and an in-process Locust run."""
