"""Step 3, normalise to facts: codes, units, dates, status filters, derived values. No I/O, no Flask."""
