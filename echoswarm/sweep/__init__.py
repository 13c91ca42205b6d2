"""``python -m echoswarm sweep``: one scenario run once per cell of a grid (``engine``), with one
module per grid: ``tcp`` (S003, server models × concurrency), ``images`` (S001, serial vs
parallel × reply mode). The tables and plots of a finished sweep are drawn by
``python -m analysis sweep DIR`` (:mod:`analysis.sweeps`)."""
