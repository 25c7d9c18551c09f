"""Pieces the evaluator and the submission tools share: errors, time limits, file safety,
input checks. Standard library and torch only; imports nothing else of the kit."""
