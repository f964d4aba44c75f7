"""What two parties must agree on: messages, commitments, competition specs, auth. No I/O beyond parsing."""
