"""Instructor tools: parallel, crash-proof nbgrader autograding and safe feedback."""
