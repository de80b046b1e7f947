"""The `corral` command line: `corral serve` and the client commands, which talk to a server over gRPC."""
