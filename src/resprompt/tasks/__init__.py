"""Tasks: reading data, turning records into instances per backbone family, features, metrics, scoring."""
