"""State: the SQLite database, the escrow of private keys, the lock and the audit log."""
