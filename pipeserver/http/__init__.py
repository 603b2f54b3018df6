"""The request both protocols serve, the parties that adapt it to a pipe, the settings and plumbing they share."""
