"""Ray Serve deployments, one package per stage; each wraps an engine that has no Ray in it."""
