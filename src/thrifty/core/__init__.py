"""What every part of thrifty shares: errors, paths, engines, jobs, models, corpora, run records.

Modules imported by engine workers (errors, paths, jobs, corpora, models) use the standard
library only, because engine environments do not have the CLI's dependencies.
"""
