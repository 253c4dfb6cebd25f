"""The audit trail: the hash chain, the write-ahead recorder, command lines and asciicast."""
