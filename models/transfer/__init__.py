"""Transfer: initialising a target model from a source, training recipes, ALS, training on disk."""
