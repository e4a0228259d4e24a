"""OptiInfra infrastructure as code: one catalog, two backends, offline tools."""
