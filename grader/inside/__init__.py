"""The scripts that run inside the sandboxes, copied to /runner and run there as plain modules.

``zygote.py`` (a warm parent, and each run's walls), ``driver.py`` (a student's cells and the
produce halves of the tests), ``checker.py`` (the check halves, on records alone) and
``artifacts.py`` (the records they exchange, which the grader reads too). They import nothing
of the grader: inside a sandbox there is no grader.
"""
