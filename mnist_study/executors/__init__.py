"""Executors beyond this machine's (executor.py): a Ray cluster's (ray.py), and a Ray cluster on
this machine alone to try it on (loopback.py). Nothing here imports Ray until it is used: Ray is an
optional extra (`pip install 'mnist-study[ray]'`).
"""
