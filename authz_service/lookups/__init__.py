"""The I/O side of identity sources that ask a remote service about a credential."""
