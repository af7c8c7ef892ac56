"""The chapter's experiments: each runs, writes its raw results, then figures and a verdict."""
