"""Plumbing every stage uses: errors, choices, layout, hub, secrets, artifacts, the cache,
tracking backends, model cards, trainer resume. Imports nothing above itself."""
