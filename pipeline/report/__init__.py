"""The pipeline's report: results gathered from the jobs' folders, plots, Markdown and HTML."""
