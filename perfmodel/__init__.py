"""What things cost: workload tables, compute and collective cost models, optimizer costs, the convergence
model, the analytic predictor, the discrete-event simulator, sweeps and planning.

Pure Python + numpy/scipy/networkx/simpy: this package never imports torch or mpi4py, so predictions run
anywhere, fast.
"""
__version__ = "0.1.0"
