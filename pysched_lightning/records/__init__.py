"""The records everything else is made of: tasks, runs and their statuses,
options, events, the seams' protocols, errors, and how they pickle.

The lowest layer: it imports nothing else of the package."""
