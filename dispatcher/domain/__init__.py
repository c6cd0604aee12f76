"""The pure core: accounts, strategy, staging and decisions. No I/O lives here."""
