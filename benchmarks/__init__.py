"""Benchmarks: this broker, amqtt and Mosquitto side by side, measured from the outside.

Nothing here imports ``mqttbroker``: the load generator speaks MQTT 3.1.1 over raw sockets with
packets encoded by :mod:`benchmarks.wire`, and the brokers run as separate processes.
"""

import os

# The load generator forks worker processes after importing numpy: keep its BLAS single-threaded
# (no thread pool to fork) and out of the way of the brokers.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
