"""The domain: vouchers, workflow states, delivery rules.  Imports no I/O library."""
