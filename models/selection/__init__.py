"""Selection: domain profiles, similarity signals, candidates and source identity."""
