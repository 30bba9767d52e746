"""Step 4, evaluate criteria: one function per leaf criterion, tri-state results. No I/O, no Flask."""
