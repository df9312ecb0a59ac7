"""Policy as code: `mandate schema`, `mandate test` and `mandate diff`, each on the loader's and the
compiler's own code (never a second reading of the policy format)."""
