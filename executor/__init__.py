"""What things really cost here: the PyTorch model zoo (the same definitions the workload tables come from),
and (later) the MPI + PyTorch executor, microbenchmarks and calibration."""
