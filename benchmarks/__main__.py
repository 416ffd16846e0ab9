"""``python -m benchmarks``: run the benchmark workloads and print the table."""

from benchmarks.runner import main

main()
