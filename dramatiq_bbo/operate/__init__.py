"""Operating operations: what the command line, ChatOps and the psql views share."""
