"""Step 1, the hook request: Flask app, discovery, patient-view, request schemas. This room does I/O."""
