"""Step 2, gather the record: read bundles and files, prefetch and the FHIR server. This room does I/O."""
