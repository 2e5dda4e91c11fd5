"""The suppression list: service functions in `service`, queries in `repository`."""
