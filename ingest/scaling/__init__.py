"""The scaling model made executable: the capacity planner (``plan``) and the auto-mode switch (``switch``).

Pure computations over the configuration's thresholds and this machine's bench figures; no I/O
beyond reading the saved bench JSON files, so both are unit-tested without services.
"""
