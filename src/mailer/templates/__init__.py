"""Templates: safe Handlebars rendering, declared variables, versions and endpoints."""
