"""The stages a user runs, in pipeline order: fetch, convert, verify; `workflow` runs all three,
`inspect` lists a checkpoint. Each imports only the stages before it."""
