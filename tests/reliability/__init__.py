"""What happens when things go wrong: bad input, crashes, divergence, concurrency, fuzzing."""
