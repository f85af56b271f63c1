"""Exact analyses fanned out over the workers: row blocks with leases, their shared bytes.

The run that needs an exact analysis of n ≥ `fanout_min_rows` rows (an analysis job's layer or
an experiment's checkpoint) writes the operand once to the fan-out store, records one block row
per row block and sends one task per block to its queue; any worker of that queue may take a
block, and the run's own worker takes blocks too, so no worker idles waiting. Blocks are claimed,
heartbeated and finished under leases like runs (`lifecycle`), and the run that fanned them out
re-queues blocks whose worker is gone, by the reconciler's rules. Partial sums are reduced in
block order (dfp_engine.fanout), so the result is the same bits however blocks were spread.
"""
