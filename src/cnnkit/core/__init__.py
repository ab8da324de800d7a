"""The foundation every other package builds on: errors, resource limits, safe output writes, shape arithmetic."""
