"""What operators use to read and steer operations: one layer that the command line, ChatOps
and any later page call, so every surface reads and changes state the same way."""
