"""The reliability campaign (``python -m tests.reliability``): crashes, Next Engine faults, bad
input and security checks against the sandbox, with nothing lost and nothing doubled."""
