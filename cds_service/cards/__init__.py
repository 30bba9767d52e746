"""Step 5, present: CDS Hooks cards and the screening report. No I/O, no requests."""
