"""Infrastructure only, no feature: errors, paths, files, output, hardware, runs, stats, jobs."""
