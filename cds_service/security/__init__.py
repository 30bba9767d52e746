"""Trust: authenticating CDS clients (signed JWTs per CDS Hooks 2.0)."""
