"""Finding peers: zeroconf advertise/browse, manual addresses, and the registry that checks them against the database."""
